//go:build tools

// Package tools pins the metrics-server command this module builds: the local node
// runs it for `kubectl top pod` and the metrics.k8s.io API.
package tools

import (
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server"
)
