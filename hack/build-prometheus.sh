#!/usr/bin/env bash
# Builds prometheus and promtool from the github.com/prometheus/prometheus Go module
# (version pinned in hack/prometheus/go.mod), in one `go build`, into a cache keyed by
# version, so a second run is a no-op. Prints the folder holding both.
# promtool checks and unit-tests the shipped alerts (make test); prometheus scrapes the
# operator on the node (tests/node/test_monitoring_on_node.py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${VSO_CACHE_DIR:-$root/.cache}"

version="$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3}' "$here/prometheus/go.mod")"
out="$cache/prometheus-$version"

if [[ ! -x "$out/prometheus" || ! -x "$out/promtool" ]]; then
  export CGO_ENABLED=0
  if [[ -z "${HOME:-}" ]]; then
    export GOCACHE="${GOCACHE:-$cache/go-build}" GOPATH="${GOPATH:-$cache/go}"
  fi
  export GOFLAGS="${GOFLAGS:--mod=mod} -trimpath"
  # Module v0.3MM.P is Prometheus 3.MM.P.
  release="$(echo "$version" | sed -E 's/^v0\.3([0-9][0-9])\.([0-9]+)$/3.\1.\2/; s/^3\.0/3./')"
  # remove_all_sd + enable_kubernetes_sd (plugins/*.go): only the Kubernetes service
  # discovery (and the file and HTTP ones every build has) is compiled in, not the 26
  # cloud providers' SDKs; netgo as upstream's release build (.promu.yml). No
  # builtinassets: the web UI's assets are not in the module; the API is all we use.
  tags="netgo,remove_all_sd,enable_kubernetes_sd"
  echo "building prometheus and promtool $version (Prometheus $release, -tags $tags)..." >&2
  start=$SECONDS
  mkdir -p "$out.tmp"
  (cd "$here/prometheus" && go build -tags "$tags" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=module" \
    -o "$out.tmp/" github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool)
  rm -rf "$out" && mv "$out.tmp" "$out"
  echo "built prometheus and promtool in $((SECONDS - start))s" >&2
fi
echo "$out"
