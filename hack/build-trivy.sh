#!/usr/bin/env bash
# Builds trivy from its Go module (version pinned in hack/trivy/go.mod) into a cache keyed
# by version, so a second run is a no-op. Prints the binary's path.
# `make scan` needs it: no prebuilt trivy (nor its container image) can be fetched here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${VSO_CACHE_DIR:-$root/.cache}"

version="$(awk '$1 == "require" && $2 == "github.com/aquasecurity/trivy" {print $3}' "$here/trivy/go.mod")"
out="$cache/trivy-$version/trivy"

if [[ ! -x "$out" ]]; then
  # Same settings as trivy's own release build (goreleaser.yml): static, jsonv2.
  export CGO_ENABLED=0 GOEXPERIMENT=jsonv2
  if [[ -z "${HOME:-}" ]]; then
    export GOCACHE="${GOCACHE:-$cache/go-build}" GOPATH="${GOPATH:-$cache/go}"
  fi
  export GOFLAGS="${GOFLAGS:--mod=mod} -trimpath"
  echo "building trivy $version (github.com/aquasecurity/trivy/cmd/trivy)..." >&2
  start=$SECONDS
  mkdir -p "$(dirname "$out")"
  (cd "$here/trivy" && go build \
    -ldflags "-s -w -X github.com/aquasecurity/trivy/pkg/version/app.ver=${version#v}" \
    -o "$out.tmp" github.com/aquasecurity/trivy/cmd/trivy)
  mv "$out.tmp" "$out"
  echo "built trivy in $((SECONDS - start))s" >&2
fi
echo "$out"
