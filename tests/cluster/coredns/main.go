// CoreDNS for the test bed's node: the cluster's DNS (the kube-dns Service), built from the
// CoreDNS module pinned in go.mod with only the plugins its Corefile uses (an "external
// plugin" build as CoreDNS documents it: the directive order stays CoreDNS's own).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

// Keeps the dnsserver package (the server type the plugins register with) linked.
var _ = dnsserver.Directives

func main() {
	coremain.Run()
}
