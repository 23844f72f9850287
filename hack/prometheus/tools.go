//go:build tools

// Package tools pins the Prometheus module whose prometheus and promtool commands
// hack/build-prometheus.sh builds: promtool checks and unit-tests the shipped alerts
// (make test), prometheus scrapes the operator on the node (tests/node).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
