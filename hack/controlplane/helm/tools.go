//go:build tools

// Package tools pins the helm command this module builds: the tests render
// charts/virtualservice-operator with `helm template`.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
