//go:build tools

// The node's components are built from this module set too (build-node.sh builds their
// commands): these imports keep their dependencies in go.mod/go.sum through `go mod tidy`.
package main

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
