#!/usr/bin/env bash
# `make image`: builds the repository's Dockerfile with buildah (no Docker daemon, nothing
# pulled from a registry) on the Debian base from build-base.sh, tags it with the
# reference deployments/deployment.yaml uses, writes an OCI archive of it to $archive,
# and prints its size (load.sh adds the second tag on the node). A second run with no change reuses
# every layer and the archive.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_tools buildah

# The manifests must name the image this builds: one version everywhere.
deployed="$(awk '$1 == "image:" {print $2; exit}' "$root/deployments/deployment.yaml")"
if [[ "$deployed" != "$reference" ]]; then
  echo "error: deployments/deployment.yaml runs image '$deployed', but the version in" \
    "src/virtualservice_operator/__init__.py makes '$reference'; set the Deployment's image to '$reference'" >&2
  exit 1
fi

total_start=$SECONDS
bash "$here/build-base.sh"

start=$SECONDS
echo "building $reference from Dockerfile (buildah, base $base_reference)..." >&2
build_args=(--build-arg "BASE=$base_reference" --build-arg "VERSION=$version"
  --label "org.opencontainers.image.revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)")
# pip inside the build trusts what the host trusts (a proxy's CA, when there is one).
host_ca=/etc/ssl/certs/ca-certificates.crt
if [[ -f "$host_ca" ]]; then
  build_args+=(--secret "id=build-ca,src=$host_ca")
fi
buildah_build --quiet --layers --pull-never --isolation chroot \
  --format oci --file "$root/Dockerfile" "${build_args[@]}" \
  --tag "$reference" "$root" >/dev/null
echo "built the image in $((SECONDS - start))s" >&2

# The archive is rewritten only when the image changed.
image_id="$("${buildah_cmd[@]}" inspect --type image --format '{{.FromImageID}}' "$reference")"
if [[ ! -f "$archive" || "$(cat "$archive.id" 2>/dev/null)" != "$image_id" ]]; then
  rm -f "$archive" "$archive.id"
  tmp="$(mktemp "$archive.XXXXXX")"
  rm -f "$tmp" # buildah writes a new file
  "${buildah_cmd[@]}" push --quiet "$reference" "oci-archive:$tmp:$reference"
  mv "$tmp" "$archive"
  echo "$image_id" >"$archive.id"
fi

size="$("${buildah_cmd[@]}" images --format '{{.Size}}' "$reference" | head -1)"
echo "image $reference ($image_id): $size unpacked, $(du -m "$archive" | cut -f1) MB archive $archive" >&2
echo "make image took $((SECONDS - total_start))s" >&2
