#!/usr/bin/env bash
# Builds prometheus and promtool from the github.com/prometheus/prometheus Go module, with
# the other tools in one module (hack/build-tools.sh, version pinned in
# hack/tools/prometheus/go.mod), cached; prints the folder holding both.
# promtool checks and unit-tests the shipped alerts (make test); prometheus scrapes the
# operator on the node (tests/node/test_monitoring_on_node.py).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/build-tools.sh" prometheus
