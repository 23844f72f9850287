//go:build tools

// Package tools pins, in one module, Istio's programs and the Go tools whose module graphs
// agree with Istio's: hack/build-tools.sh builds them in one `go build`, each shared
// package (client-go, grpc, protobuf, helm...) compiled once.
package tools

import (
	_ "github.com/aquasecurity/trivy/cmd/trivy"
	_ "helm.sh/helm/v3/cmd/helm"
	_ "istio.io/istio/istioctl/cmd/istioctl"
	_ "istio.io/istio/pilot/cmd/pilot-discovery"
	_ "istio.io/istio/pkg/test/echo/cmd/client"
	_ "istio.io/istio/pkg/test/echo/cmd/server"
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server"
)
