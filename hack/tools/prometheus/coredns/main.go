// CoreDNS for the local node's cluster DNS, with only the plugins its Corefile uses.
// This is CoreDNS's own way to choose plugins at build time (a main package importing
// coremain and the plugins, with dnsserver.Directives giving their order): the build
// leaves out the cloud providers' SDKs of the full binary and takes a fraction of its time.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order of CoreDNS's generated list (core/dnsserver/zdirectives.go), kept to these.
	dnsserver.Directives = []string{"ready", "health", "errors", "cache", "kubernetes"}
}

func main() {
	coremain.Run()
}
