//go:build tools

// Keeps kube-router's command (and so its go.sum lines) in this module.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/pkg/cmd"
