#!/usr/bin/env bash
# Builds what `make mesh` runs on the node besides Kubernetes, with the other tools in one
# module (hack/build-tools.sh, hack/tools/istio/go.mod), cached; prints each build's time
# (stderr) and the folder holding the binaries (stdout):
# - istiod (pilot-discovery), istioctl and Istio's echo app (server, client), from the
#   istio.io/istio module at the pseudo-version hack/tools/istio/go.mod pins (the only version
#   the Go module proxy serves for that module);
# - CoreDNS, the node's cluster DNS: hack/tools/prometheus/coredns (its plugins only).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/build-tools.sh" istio coredns
