#!/usr/bin/env bash
# `make image-load`: imports the archive from build.sh into the node's containerd (the
# k8s.io namespace, where the kubelet looks) under the reference the manifests use, and
# tags it again as each of $IMAGE_EXTRA_TAGS, default v1.3.1 (the guide's
# `kubectl set image ...:v1.3.1` then `rollout undo` needs a second tag on the node).
#   --if-present   do nothing (say so) when the node's containerd is not running
# CONTAINERD_ADDRESS overrides the node's socket.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

address="${CONTAINERD_ADDRESS:-/run/virtualservice-operator-node/containerd.sock}"
if [[ ! -S "$address" ]]; then
  if [[ "${1:-}" == "--if-present" ]]; then
    echo "no containerd at $address (make node starts one): image not loaded" >&2
    exit 0
  fi
  echo "error: no containerd socket at $address; start the node first (make node)," \
    "or set CONTAINERD_ADDRESS to another containerd's socket" >&2
  exit 1
fi
if [[ ! -f "$archive" ]]; then
  echo "error: no image archive $archive; build it first (make image)" >&2
  exit 1
fi
need_tools ctr

start=$SECONDS
ctr_cmd=(ctr --address "$address" --namespace k8s.io)
# The archive names the image with its whole reference (buildah's oci-archive
# ref.name), so no --base-name is needed; import also unpacks it for the default snapshotter.
"${ctr_cmd[@]}" images import "$archive" >/dev/null
"${ctr_cmd[@]}" images check "name==$reference" | grep -q complete ||
  { echo "error: $reference is not complete in containerd at $address after import" >&2; exit 1; }
loaded="$reference"
for tag in ${IMAGE_EXTRA_TAGS-v1.3.1}; do
  "${ctr_cmd[@]}" images tag --force "$reference" "$repository:$tag" >/dev/null
  loaded+=", :$tag"
done
echo "loaded $loaded into containerd at $address in $((SECONDS - start))s" >&2
