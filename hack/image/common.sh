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
