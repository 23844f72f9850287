#!/usr/bin/env bash
# Copies Istio's generated CRDs (kubernetes/customresourcedefinitions.gen.yaml of the
# istio.io/api module pinned in hack/istio/go.mod) out of the Go module cache into a
# cache folder keyed by version, so a second run is a no-op. Prints the file's path.
# Nothing is compiled: the module is only a pinned, checksummed (go.sum) source of it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${VSO_CACHE_DIR:-$root/.cache}"

version="$(awk '$1 == "require" && $2 == "istio.io/api" {print $3}' "$here/istio/go.mod")"
dir="$cache/istio-api-$version"
file="customresourcedefinitions.gen.yaml"

if [[ ! -s "$dir/$file" ]]; then
  if [[ -z "${HOME:-}" ]]; then
    export GOPATH="${GOPATH:-$cache/go}"
  fi
  # `go mod download -json` prints the unpacked module's folder (Dir) after checking it
  # against hack/istio/go.sum.
  module_dir="$(cd "$here/istio" && GOFLAGS=-mod=mod go mod download -json istio.io/api |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  if [[ -z "$module_dir" || ! -s "$module_dir/kubernetes/$file" ]]; then
    echo "istio.io/api $version: kubernetes/$file not found (module at '$module_dir')" >&2
    exit 1
  fi
  mkdir -p "$dir"
  cp "$module_dir/kubernetes/$file" "$dir/$file.tmp"
  chmod 0644 "$dir/$file.tmp"
  mv "$dir/$file.tmp" "$dir/$file"
fi
# A stable name for the current version (relative: the cache folder may be shared or
# moved); the versioned folders are the cache.
ln -sfn "istio-api-$version/$file" "$cache/istio-crds.gen.yaml"
echo "$cache/istio-crds.gen.yaml"
