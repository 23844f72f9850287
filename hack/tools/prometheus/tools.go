//go:build tools

// Package tools pins, in one module, Prometheus's programs and CoreDNS (./coredns): both
// need newer Prometheus client libraries than Istio's module compiles with (istioctl
// calls an API that changed after github.com/prometheus/client_golang v1.23), so they
// share a module of their own; hack/build-tools.sh builds them in one `go build`.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
