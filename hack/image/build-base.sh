#!/usr/bin/env bash
# Builds the image's base, Debian bookworm with its python3.11, from Debian's packages
# (mmdebstrap), and stores it in buildah's storage as $base_reference. Cached: rebuilt
# only when this script changes. The Dockerfile's default base, python:3.11-slim, is
# Debian bookworm with Python 3.11 too, but no registry can be reached here.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_tools buildah mmdebstrap

key="$(sha256sum "$here/build-base.sh" | cut -c1-16)"
stamp="$image_cache/base-$key.done"
if [[ -f "$stamp" ]] && "${buildah_cmd[@]}" inspect --type image "$base_reference" >/dev/null 2>&1; then
  exit 0
fi

mkdir -p "$image_cache"
work="$(mktemp -d "$image_cache/base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
echo "building the image base $base_reference (mmdebstrap bookworm + python3.11)..." >&2
# python3-venv: the Dockerfile installs the operator into a virtual environment, the same
# way on this base and on python:3.11-slim. No docs, man pages or locales: nothing reads them.
# The merged-usr hook makes /bin -> usr/bin itself; without it bookworm's usrmerge package
# (and with it 70 MB of perl) is installed to do the same.
mmdebstrap --quiet --mode=root --variant=minbase --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm "$work/rootfs.tar" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main"

container="$("${buildah_cmd[@]}" from scratch)"
trap '"${buildah_cmd[@]}" rm "$container" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"${buildah_cmd[@]}" add --quiet "$container" "$work/rootfs.tar" /
"${buildah_cmd[@]}" config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --cmd python3 \
  --label org.opencontainers.image.title=virtualservice-operator-base \
  --label "org.opencontainers.image.description=Debian bookworm (minbase) with python3.11, built by hack/image/build-base.sh" \
  "$container"
"${buildah_cmd[@]}" commit --quiet --rm "$container" "$base_reference" >/dev/null
rm -f "$image_cache"/base-*.done
touch "$stamp"
echo "built the image base in $((SECONDS - start))s" >&2
