// Command etcd is a plain etcd server built from go.etcd.io/etcd/server/v3,
// for the local control plane used by the demo and the tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
