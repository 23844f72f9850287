#!/usr/bin/env bash
# Builds trivy from its Go module, with the other tools in one module
# (hack/build-tools.sh, version pinned in hack/tools/istio/go.mod), cached; prints its path.
# `make scan` and `make release` need it: no prebuilt trivy (nor its container image) can
# be fetched here.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$(bash "$here/build-tools.sh" trivy)"
echo "$tools/trivy"
