# virtualservice-operator — `make demo` and `make test` do all the set-up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig
export KUBECONFIG

.PHONY: help install controlplane prometheus node-binaries cluster node mesh cluster-down run demo demo-mesh test test-unit test-integration test-node test-mesh lint bench bench-mesh bench-node clean image image-load scan release

help:
	@echo "make demo      build the local control plane, run the operator on a sample, show the result"
	@echo "make test      run the whole test suite (unit + integration against a real kube-apiserver)"
	@echo "make lint      ruff + mypy"
	@echo "make cluster   start a local control plane in the background (.cluster/kubeconfig)"
	@echo "make node      start a real one-node Kubernetes in the background (root; .cluster/kubeconfig)"
	@echo "make mesh      a node with cluster DNS and Istio's istiod (webhook, xDS), no Envoy (root)"
	@echo "make demo-mesh the operator on the mesh: a real request routed by its VirtualService"
	@echo "make cluster-down  stop any of them, leaving no process, mount or iptables rule behind"
	@echo "make run       run the operator against \$$KUBECONFIG"
	@echo "make image     build the operator's image from Dockerfile (buildah, no daemon); load it into the node"
	@echo "make scan      trivy on the image: secrets, misconfigurations, SBOM (.cache/image/)"
	@echo "make release   dist/: packaged chart, install.yaml (image by digest), image archive, SBOM, scan, wheel, sdist, SHA256SUMS"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

controlplane: $(STAMP)
	bash hack/build-controlplane.sh >/dev/null

# promtool (the alerts' unit tests) and prometheus (the node's scrape test), from the
# Prometheus module pinned in hack/tools/prometheus/go.mod (hack/build-tools.sh); cached.
prometheus:
	nice -n 10 bash hack/build-prometheus.sh >/dev/null

cluster: controlplane
	$(PY) -m virtualservice_operator_dev.controlplane up --dir .cluster

# The node's binaries, the mesh's (Istio, CoreDNS) and the operator's image (the node
# and mesh tests install it as a user does), only where this machine can run a node
# (root, cgroups).
node-binaries: controlplane
	@if $(PY) -m virtualservice_operator_dev.node check >/dev/null; then \
		nice -n 10 bash hack/build-controlplane.sh node >/dev/null && \
		nice -n 10 bash hack/build-mesh.sh >/dev/null && \
		nice -n 10 bash hack/image/build.sh; fi

node: controlplane
	@$(PY) -m virtualservice_operator_dev.node check
	nice -n 10 bash hack/build-controlplane.sh node >/dev/null
	$(PY) -m virtualservice_operator_dev.node up --dir .cluster

# The node plus CoreDNS and Istio (istiod from the istio.io/istio module, its charts):
# ready when istiod's webhook denies a bad VirtualService.
mesh: controlplane
	@$(PY) -m virtualservice_operator_dev.node check
	nice -n 10 bash hack/build-controlplane.sh node >/dev/null
	$(PY) -m virtualservice_operator_dev.mesh up --dir .cluster

cluster-down: $(STAMP)
	$(PY) -m virtualservice_operator_dev.node down --dir .cluster

run: $(STAMP)
	$(VENV)/bin/virtualservice-operator run -zap-development=true

demo: controlplane
	$(PY) -m virtualservice_operator_dev.demo

demo-mesh: node-binaries
	$(PY) -m virtualservice_operator_dev.demo_mesh

test: controlplane prometheus node-binaries
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: controlplane
	$(PY) -m pytest -q tests/integration

test-node: node-binaries
	$(PY) -m pytest -q tests/node

test-mesh: node-binaries
	$(PY) -m pytest -q tests/mesh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

# The benchmark (not part of `make test`): make bench SCALES="S M L" BENCH_ARGS="--profile-seconds 10"
bench: controlplane
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench --scales $(or $(SCALES),S M) $(BENCH_ARGS)

# The mesh figure (root; not part of `make test`): from `kubectl apply` of a developer
# Service to the first request routed to it through istiod, over 50 changes, and the
# operator's share; bench/results/mesh.json.
bench-mesh: node-binaries
	VSO_MESH_ROUTE_CHANGES=50 VSO_MESH_RESULTS=bench/results/mesh.json $(PY) -m pytest -q tests/mesh -k route_latency

# The operator's Pod on the node (root; not part of `make test`) converging a bench scale
# within its 256Mi, then restarting on it: peaks from its memory cgroup, XL by default.
bench-node: node-binaries
	VSO_NODE_SCALE=$(or $(SCALES),XL) VSO_NODE_RESULTS=bench/results/node-$(or $(SCALES),XL).json $(PY) -m pytest -q -s tests/node/test_ha_on_node.py -k memory_converging

# The operator's image from Dockerfile, with buildah and a Debian base made from Debian's
# packages: no Docker daemon, no registry (hack/image/). Loaded into the node's
# containerd when `make node` runs one.
image:
	bash hack/image/build.sh
	bash hack/image/load.sh --if-present

image-load:
	bash hack/image/load.sh

scan: image
	bash hack/image/scan.sh

# dist/ from the chart and the image built from this tree (hack/release.sh).
release: $(STAMP)
	bash hack/release.sh

clean:
	rm -rf $(VENV) .cluster .pytest_cache .mypy_cache .ruff_cache
