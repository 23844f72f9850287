//go:build tools

// Package tools pins the Kubernetes commands this module builds:
// kube-apiserver for the local control plane and kubectl for the tests.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
