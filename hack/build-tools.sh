#!/usr/bin/env bash
# Builds the Go programs the tests and the node run besides Kubernetes itself, pinned in
# two modules (hack/tools/istio, hack/tools/prometheus), into a cache folder keyed by
# both modules and these flags, so a second run is a no-op. Prints the folder (stdout)
# and each build's time (stderr).
#
#   bash hack/build-tools.sh               every tool
#   bash hack/build-tools.sh helm istio    only those (and what is missing of them)
#   bash hack/build-tools.sh --dir         the folder only, building nothing
#
# Tools, by module:
# - hack/tools/istio: istio (pilot-discovery, istioctl, the echo app's server and
#   client), helm, metrics-server, trivy;
# - hack/tools/prometheus: prometheus (prometheus, promtool), coredns
#   (hack/tools/prometheus/coredns: only the plugins the node's Corefile uses).
#
# Why shared modules: built each from its own module, these programs compiled client-go,
# grpc, protobuf, helm and the rest once per module, at slightly different versions, so
# Go's build cache could not share them (about 40,600 Go files in all). In one module
# graph each shared module has one version (the highest any of them asks for: Go's
# minimal version selection) and each package is compiled once, whichever tool is built
# first: about 24,300 files in the two modules. Two and not one: istioctl calls a
# github.com/prometheus/client_golang API that v1.25 changed, and Prometheus needs v1.25.
# In each module the k8s.io staging modules are pinned to one release together, so that
# none is mixed with another release's.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${VSO_CACHE_DIR:-$root/.cache}"
modules="$here/tools"

version() { # module path -> its pinned version, in either module
  awk -v m="$1" '($1 == m || ($1 == "require" && $2 == m)) {print ($1 == m ? $2 : $3); exit}' \
    "$modules/istio/go.mod" "$modules/prometheus/go.mod"
}

# Each tool's build group: a module, built in one `go build`; metrics-server links apart
# (the same compiled packages) because its version goes into client-go's, which the
# other programs of its module also hold.
declare -A module_of=(
  [helm]=istio [metrics-server]=metrics-server [istio]=istio [trivy]=istio
  [prometheus]=prometheus [coredns]=prometheus
)
declare -A group_module=([istio]=istio [metrics-server]=istio [prometheus]=prometheus)
declare -A packages=(
  [helm]="helm.sh/helm/v3/cmd/helm"
  [metrics-server]="sigs.k8s.io/metrics-server/cmd/metrics-server"
  [istio]="istio.io/istio/pilot/cmd/pilot-discovery istio.io/istio/istioctl/cmd/istioctl istio.io/istio/pkg/test/echo/cmd/server istio.io/istio/pkg/test/echo/cmd/client"
  [coredns]="./coredns"
  [prometheus]="github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool"
  [trivy]="github.com/aquasecurity/trivy/cmd/trivy"
)
tools=("$@")
if ((${#tools[@]} == 0)); then
  tools=(helm metrics-server istio coredns prometheus trivy)
fi

helm_version="$(version helm.sh/helm/v3)"
metrics_version="$(version sigs.k8s.io/metrics-server)"
prometheus_version="$(version github.com/prometheus/prometheus)"
trivy_version="$(version github.com/aquasecurity/trivy)"
# helm's default .Capabilities.KubeVersion follows the kube-apiserver the tests run
# (hack/controlplane/kube), not the client-go helm is compiled with.
kube_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/controlplane/kube/go.mod")"
kube_minor="$(echo "$kube_version" | cut -d. -f2)"
# Module v0.3MM.P is Prometheus 3.MM.P.
prometheus_release="$(echo "$prometheus_version" | sed -E 's/^v0\.3([0-9][0-9])\.([0-9]+)$/3.\1.\2/; s/^3\.0/3./')"

# One set of flags for every tool: build flags are part of the build cache's keys, so a
# tool built alone (make controlplane builds helm) leaves its packages for the others.
# - GOEXPERIMENT=jsonv2: trivy imports encoding/json/v2 (its release builds set it);
#   encoding/json keeps its documented behaviour under it.
# - remove_all_sd,enable_kubernetes_sd: Prometheus's own build tags, leaving out the
#   service discoveries of 26 cloud providers (only Kubernetes, file and HTTP remain).
#   No other module has files under these tags.
# - -X: each tool's version where its own release build puts it (a flag naming a
#   symbol a binary lacks is ignored, so one list serves all but metrics-server's).
export CGO_ENABLED=0 GOEXPERIMENT=jsonv2
if [[ -z "${HOME:-}" ]]; then
  export GOCACHE="${GOCACHE:-$cache/go-build}" GOPATH="${GOPATH:-$cache/go}"
fi
export GOFLAGS="-mod=mod -trimpath -buildvcs=false"
tags="remove_all_sd,enable_kubernetes_sd"
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kube_minor"
ldflags+=" -X github.com/prometheus/common/version.Version=$prometheus_release -X github.com/prometheus/common/version.Branch=module"
ldflags+=" -X github.com/aquasecurity/trivy/pkg/version/app.ver=${trivy_version#v}"

key="$(cat "$modules"/*/go.mod "$modules"/*/go.sum "$modules/prometheus/coredns/main.go" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
out="$cache/tools-$key"
if [[ "${1:-}" == "--dir" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"

declare -A wanted=()
for tool in "${tools[@]}"; do
  if [[ -z "${packages[$tool]:-}" ]]; then
    echo "build-tools.sh: unknown tool $tool (known: ${!packages[*]})" >&2
    exit 2
  fi
  for package in ${packages[$tool]}; do
    if [[ ! -x "$out/$(basename "$package")" ]]; then
      wanted[${module_of[$tool]}]+=" $package"
    fi
  done
done

declare -A group_ldflags=([metrics-server]="-X k8s.io/client-go/pkg/version.gitVersion=$metrics_version")
for group in istio metrics-server prometheus; do
  [[ -n "${wanted[$group]:-}" ]] || continue
  read -ra targets <<<"${wanted[$group]}"
  module="${group_module[$group]}"
  names=()
  for package in "${targets[@]}"; do names+=("$(basename "$package")"); done
  echo "building ${names[*]} (hack/tools/$module, one go build)..." >&2
  start=$SECONDS
  tmp="$(mktemp -d "$out/.tmp.XXXXXX")"
  (cd "$modules/$module" && go build -tags "$tags" -ldflags "$ldflags ${group_ldflags[$group]:-}" \
    -o "$tmp/" "${targets[@]}")
  mv "$tmp"/* "$out/"
  rmdir "$tmp"
  echo "built ${names[*]} in $((SECONDS - start))s" >&2
done
echo "$out"
