//go:build tools

// Keeps helm's command in this module's requirements.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
