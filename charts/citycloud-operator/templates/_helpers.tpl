{{/*
The chart's name, or nameOverride.
*/}}
{{- define "citycloud-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the chart's objects: the release name when it contains the chart's name
(`helm install citycloud-operator ...` gives "citycloud-operator"), else "<release>-<chart>".
*/}}
{{- define "citycloud-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "citycloud-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of the chart.
*/}}
{{- define "citycloud-operator.labels" -}}
helm.sh/chart: {{ include "citycloud-operator.chart" . }}
{{ include "citycloud-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: citycloud
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the operator's pod.
*/}}
{{- define "citycloud-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "citycloud-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "citycloud-operator.serviceAccountName" -}}
{{- default (include "citycloud-operator.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
The user name the operator authenticates as.
*/}}
{{- define "citycloud-operator.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "citycloud-operator.serviceAccountName" .) }}
{{- end }}

{{/*
The ClusterRole granting Secrets read/write, bound per namespace (never cluster-wide).
*/}}
{{- define "citycloud-operator.secretsClusterRole" -}}
{{- printf "%s-secrets" (include "citycloud-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The image reference: repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "citycloud-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
CEL: true when the requester is NOT allowed to touch what the operator manages. Exempt are the
operator itself, members of system:masters, the kube-system controllers (the namespace
controller and the garbage collector must still clean up: with
--use-service-account-credentials they are system:serviceaccount:kube-system:*, without it
system:kube-controller-manager), and admissionPolicies.extraExemptUsers/extraExemptGroups.
*/}}
{{- define "citycloud-operator.celNotPrivileged" -}}
{{- $users := concat (list (include "citycloud-operator.username" .) "system:kube-controller-manager") .Values.admissionPolicies.extraExemptUsers -}}
{{- $groups := concat (list "system:masters") .Values.admissionPolicies.extraExemptGroups -}}
!(request.userInfo.username in {{ toJson $users }})
&& !request.userInfo.username.startsWith('system:serviceaccount:kube-system:')
&& !request.userInfo.groups.exists(g, g in {{ toJson $groups }})
{{- end }}

{{/*
The resourceName of tenants on which the verb approve lets one decide top-level TenantRequests
(those in tenantRequests.namespace). It contains dots, so no Tenant can ever have this name.
*/}}
{{- define "citycloud-operator.topLevelApproval" -}}
top-level.citycloud.io
{{- end }}
