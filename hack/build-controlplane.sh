#!/usr/bin/env bash
# Builds kube-apiserver, kubectl, etcd and kubeconfig-resolve from their Go modules, and helm
# with the other tools (hack/build-tools.sh), into a cache keyed by version, and copies
# Istio's generated CRDs out of their Go module (hack/istio-crds.sh), so a second run is a
# no-op. Prints the bin directory.
# `build-controlplane.sh node` also builds what `make node` runs (see the node block).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${VSO_CACHE_DIR:-$root/.cache}"

kube_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/controlplane/kube/go.mod")"
etcd_version="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/controlplane/etcd/go.mod")"
kube_minor="$(echo "$kube_version" | cut -d. -f2)"

kube_dir="$cache/kubernetes-$kube_version"
etcd_dir="$cache/etcd-$etcd_version"
bin="$cache/bin"

export CGO_ENABLED=0
# Go keeps its build and module caches under $HOME; a bare environment without one
# (some CI runners) gets them under the cache folder instead.
if [[ -z "${HOME:-}" ]]; then
  export GOCACHE="${GOCACHE:-$cache/go-build}" GOPATH="${GOPATH:-$cache/go}"
fi
export GOFLAGS="${GOFLAGS:--mod=mod} -trimpath"

build() { # dir out package [ldflags]
  local dir="$1" out="$2" pkg="$3" ldflags="${4:-}"
  if [[ -x "$out" ]]; then
    return 0
  fi
  echo "building $(basename "$out") ($pkg)..." >&2
  local start=$SECONDS
  (cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  echo "built $(basename "$out") in $((SECONDS - start))s" >&2
}

build_set() { # dir outdir ldflags package...: the missing ones in one `go build`
  local dir="$1" outdir="$2" ldflags="$3"
  shift 3
  local missing=() names=() package
  for package in "$@"; do
    if [[ ! -x "$outdir/$(basename "$package")" ]]; then
      missing+=("$package")
      names+=("$(basename "$package")")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  echo "building ${names[*]} (one go build)..." >&2
  local start=$SECONDS tmp
  tmp="$(mktemp -d "$outdir/.tmp.XXXXXX")"
  (cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$tmp/" "${missing[@]}")
  mv "$tmp"/* "$outdir/"
  rmdir "$tmp"
  echo "built ${names[*]} in $((SECONDS - start))s" >&2
}

mkdir -p "$kube_dir" "$etcd_dir" "$bin"
version_flags="-X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kube_minor -X k8s.io/component-base/version.gitTreeState=clean"
build "$here/controlplane/etcd" "$etcd_dir/etcd" . \
  "-X go.etcd.io/etcd/api/v3/version.GitSHA=module"
build_set "$here/controlplane/kube" "$kube_dir" "$version_flags" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
# helm renders charts/virtualservice-operator in the tests (`helm template`); built with
# the other tools (hack/tools/istio/go.mod). Its default capabilities (.Capabilities.KubeVersion)
# follow the kube-apiserver built above.
tools="$(bash "$here/build-tools.sh" helm)"

# client-go's reading of a kubeconfig, the reference the loader is tested against
# (tests/unit/test_kubeconfig_conformance.py): a package of the kube module, so it reuses
# kube-apiserver's compiled client-go; keyed by its source, as it is ours.
resolve_key="$(cat "$here/controlplane/kube/kubeconfig-resolve/main.go" "$here/controlplane/kube/go.sum" | sha256sum | cut -c1-16)"
resolve_dir="$cache/kubeconfig-resolve-$resolve_key"
mkdir -p "$resolve_dir"
build "$here/controlplane/kube" "$resolve_dir/kubeconfig-resolve" ./kubeconfig-resolve

# Istio's CRDs, installed by the local control plane (tests, demo).
bash "$here/istio-crds.sh" >/dev/null

# Stable names for the current versions; the versioned folders are the cache.
ln -sfn "$kube_dir/kube-apiserver" "$bin/kube-apiserver"
ln -sfn "$kube_dir/kubectl" "$bin/kubectl"
ln -sfn "$etcd_dir/etcd" "$bin/etcd"
ln -sfn "$tools/helm" "$bin/helm"
ln -sfn "$resolve_dir/kubeconfig-resolve" "$bin/kubeconfig-resolve"
# --- node: kubelet, kube-proxy, kube-scheduler, kube-controller-manager (same module and
# version as kube-apiserver), and metrics-server with the other tools (hack/tools/istio/go.mod).
if [[ "${1:-}" == "node" ]]; then
  components=(kubelet kube-proxy kube-scheduler kube-controller-manager)
  build_set "$here/controlplane/kube" "$kube_dir" "$version_flags" "${components[@]/#/k8s.io/kubernetes/cmd/}"
  for component in "${components[@]}"; do
    ln -sfn "$kube_dir/$component" "$bin/$component"
  done
  tools="$(bash "$here/build-tools.sh" metrics-server)"
  ln -sfn "$tools/metrics-server" "$bin/metrics-server"
fi
# --- end node

echo "$bin"
