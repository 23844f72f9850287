#!/usr/bin/env bash
# Builds what `make mesh` runs on the node besides Kubernetes, into a cache keyed by
# version, so a second run is a no-op; prints each build's time (stderr) and the Istio
# binaries' folder (stdout):
# - istiod (pilot-discovery), istioctl and Istio's echo app (server, client): one
#   `go install pkg@version` of the istio.io/istio module at hack/istio/istio-version (a
#   pseudo-version: the only one the Go module proxy serves for that module);
# - CoreDNS, the node's cluster DNS: hack/coredns (its plugins only) at the version its go.mod pins.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${VSO_CACHE_DIR:-$root/.cache}"

istio_version="$(tr -d '[:space:]' <"$here/istio/istio-version")"
coredns_version="$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$here/coredns/go.mod")"
istio_dir="$cache/istio-$istio_version"
coredns_dir="$cache/coredns-$coredns_version"

export CGO_ENABLED=0
# Go keeps its build and module caches under $HOME; a bare environment without one
# (some CI runners) gets them under the cache folder instead.
if [[ -z "${HOME:-}" ]]; then
  export GOCACHE="${GOCACHE:-$cache/go-build}" GOPATH="${GOPATH:-$cache/go}"
fi

istio_binaries=(pilot-discovery istioctl server client)
istio_packages=(pilot/cmd/pilot-discovery istioctl/cmd/istioctl pkg/test/echo/cmd/server pkg/test/echo/cmd/client)
missing=()
for binary in "${istio_binaries[@]}"; do
  [[ -x "$istio_dir/$binary" ]] || missing+=("$binary")
done
if ((${#missing[@]})); then
  echo "building istio $istio_version (${istio_binaries[*]}, one go install)..." >&2
  start=$SECONDS
  mkdir -p "$istio_dir"
  tmp="$(mktemp -d "$istio_dir/.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  # One `go install` for the four: one module graph, each package compiled once. The
  # flags are part of the build cache's keys: keep them as they are.
  targets=()
  for package in "${istio_packages[@]}"; do
    targets+=("istio.io/istio/$package@$istio_version")
  done
  GOBIN="$tmp" GOFLAGS="-buildvcs=false -trimpath" go install -ldflags "-s -w" "${targets[@]}"
  mv "$tmp"/* "$istio_dir/"
  echo "built istio in $((SECONDS - start))s" >&2
fi

if [[ ! -x "$coredns_dir/coredns" ]]; then
  echo "building coredns $coredns_version (hack/coredns)..." >&2
  start=$SECONDS
  mkdir -p "$coredns_dir"
  (cd "$here/coredns" && GOFLAGS="-mod=mod -trimpath" go build -ldflags "-s -w" -o "$coredns_dir/coredns.tmp" .)
  mv "$coredns_dir/coredns.tmp" "$coredns_dir/coredns"
  echo "built coredns in $((SECONDS - start))s" >&2
fi

echo "$istio_dir"
