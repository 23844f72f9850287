# Sourced by the hack/image scripts: names and the buildah invocation they share.
# shellcheck shell=bash

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${VSO_CACHE_DIR:-$root/.cache}"
image_cache="$cache/image"

# The one version (virtualservice_operator.__version__) names the image: v<version>.
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/src/virtualservice_operator/__init__.py")"
if [[ -z "$version" ]]; then
  echo "error: no __version__ = \"...\" line in src/virtualservice_operator/__init__.py" >&2
  exit 1
fi
repository="harbor.intent.ai/library/virtualservice-operator"
reference="$repository:v$version"
archive="$image_cache/virtualservice-operator-v$version.oci.tar"

base_reference="localhost/virtualservice-operator-base:bookworm-python3.11"

# buildah keeps its images in the cache folder (not /var/lib/containers), so that
# `rm -rf .cache` forgets them and nothing else on the machine is touched. overlay: each
# layer stored once; vfs would copy the whole root filesystem at every step.
buildah_cmd=(buildah --root "$image_cache/storage" --runroot /run/virtualservice-operator-buildah
  --storage-driver overlay)

need_tools() { # installs Debian's packages for the commands it is given, when missing
  local missing=() cmd pkg
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 && continue
    case "$cmd" in
      ctr) pkg=containerd ;;
      *) pkg="$cmd" ;;
    esac
    missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ "$(id -u)" != 0 ]]; then
    echo "error: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  echo "installing ${missing[*]} (Debian packages)..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
}

# buildah starts each RUN step in a fresh copy of itself, written into a memfd and sealed
# (containers/storage's unshare.c). On some kernels the seal is refused at random with
# EBUSY ("sealing memfd copy: Device or resource busy"; seen once in CI), before the step
# runs anything. Only then is the build tried again, up to 3 times in all: the steps that
# finished are cached layers. Any other failure ends it at once.
buildah_build() { # buildah_build ARGS...: "${buildah_cmd[@]}" build ARGS...
  local attempt log rc
  log="$(mktemp)"
  for attempt in 1 2 3; do
    rc=0
    "${buildah_cmd[@]}" build "$@" 2>"$log" || rc=$?
    cat "$log" >&2
    if ((rc == 0)) || ! grep -q 'sealing memfd copy: Device or resource busy' "$log" || ((attempt == 3)); then
      rm -f "$log"
      return "$rc"
    fi
    echo "buildah could not seal its copy of itself (EBUSY from the kernel, before the step ran); building again, try $((attempt + 1)) of 3" >&2
  done
}
