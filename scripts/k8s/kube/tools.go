//go:build tools

// Package tools names the Kubernetes commands that scripts/k8s/build.sh builds, so that
// `go mod tidy` records their whole module graph and checksums in go.mod and go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
