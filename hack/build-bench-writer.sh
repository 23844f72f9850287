#!/usr/bin/env bash
# Builds the benchmark's reference writer (hack/controlplane/kube/benchwriter: client-go at
# the release of the local kube-apiserver, in the same module, so it shares its Go build
# cache) into the cache folder, keyed by a hash of its source and the module's pins, so a
# second run is a no-op. Prints the binary's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${VSO_CACHE_DIR:-$root/.cache}"
module="$here/controlplane/kube"

key="$(cat "$module/benchwriter/"*.go "$module/go.mod" "$module/go.sum" | sha256sum | cut -c1-16)"
out="$cache/benchwriter-$key/benchwriter"

export CGO_ENABLED=0
if [[ -z "${HOME:-}" ]]; then
  export GOCACHE="${GOCACHE:-$cache/go-build}" GOPATH="${GOPATH:-$cache/go}"
fi
export GOFLAGS="${GOFLAGS:--mod=mod} -trimpath"

if [[ ! -x "$out" ]]; then
  echo "building benchwriter (client-go)..." >&2
  start=$SECONDS
  mkdir -p "$(dirname "$out")"
  (cd "$module" && nice -n 10 go build -ldflags "-s -w" -o "$out.tmp" ./benchwriter)
  mv "$out.tmp" "$out"
  echo "built benchwriter in $((SECONDS - start))s" >&2
fi
echo "$out"
