//go:build tools

// Package tools pins the trivy command this module builds: `make scan` runs it on the
// operator's image archive with the scanners that need no database download.
package tools

import (
	_ "github.com/aquasecurity/trivy/cmd/trivy"
)
