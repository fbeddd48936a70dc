{{/*
Chart name, shortened to 63 characters.
*/}}
{{- define "signet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name: the release name, plus the chart name unless the release name
already contains it. Kept short (48) enough for the longest suffix ("-server-metrics", 63 in all).
*/}}
{{- define "signet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of cluster-scoped objects that belong to one release (ClusterRoles and their bindings): the
namespace is part of it, so releases in different namespaces do not clash.
*/}}
{{- define "signet.clusterScopedName" -}}
{{- printf "%s-%s" (include "signet.fullname" .) .Release.Namespace | trunc 56 | trimSuffix "-" }}
{{- end }}

{{- define "signet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "signet.labels" -}}
helm.sh/chart: {{ include "signet.chart" . }}
app.kubernetes.io/name: {{ include "signet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: signet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one component: include with (dict "root" $ "component" "server").
*/}}
{{- define "signet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
All labels of one component's objects and pods.
*/}}
{{- define "signet.componentLabels" -}}
{{ include "signet.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Names. The CA Secret, bundle ConfigMap and Lease keep the names the binary defaults to; the
chart passes them explicitly (--ca-secret, --bundle-configmap, --lease-name) and grants RBAC on
exactly these names.
*/}}
{{- define "signet.serverName" -}}
{{- printf "%s-server" (include "signet.fullname" .) }}
{{- end }}

{{- define "signet.agentName" -}}
{{- printf "%s-agent" (include "signet.fullname" .) }}
{{- end }}

{{- define "signet.caSecretName" -}}
signet-ca
{{- end }}

{{- define "signet.bundleConfigMapName" -}}
signet-bundle
{{- end }}

{{- define "signet.agentStateConfigMapName" -}}
signet-agents
{{- end }}

{{- define "signet.federatedBundlesConfigMapName" -}}
signet-federated-bundles
{{- end }}

{{- define "signet.leaseName" -}}
signet-server
{{- end }}

{{/*
The default fallback ClusterSPIFFEID the server keeps applied (--default-identity-name); the
server ClusterRole grants get and patch on this name only.
*/}}
{{- define "signet.defaultIdentityName" -}}
{{- printf "%s-default" (include "signet.fullname" .) }}
{{- end }}

{{/*
The agent API address agents dial: the server Service's in-cluster DNS name.
*/}}
{{- define "signet.serverAddress" -}}
{{- printf "%s.%s.svc:%v" (include "signet.serverName" .) .Release.Namespace .Values.server.service.port }}
{{- end }}

{{/*
The Signet image reference; a digest wins over the tag.
*/}}
{{- define "signet.image" -}}
{{- $repository := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "signet.registrarImage" -}}
{{- printf "%s:%s" .Values.csi.registrarImage.repository .Values.csi.registrarImage.tag }}
{{- end }}

{{/*
Checks values that the schema cannot express. Included by every workload template.
*/}}
{{- define "signet.validate" -}}
{{- /* required, not fail: `helm lint` reports a missing required value, but ignores fail. */}}
{{- $_ := required "trustDomain is required: set it to your trust domain, e.g. --set trustDomain=example.org" .Values.trustDomain }}
{{- /* The CSI driver bind-mounts agent.socketDir into every pod: it must not hold or sit in the
agent's data (SVID keys) or the kubelet's directory (the schema refuses the well-known shared ones). */}}
{{- $socketDir := printf "%s/" .Values.agent.socketDir }}
{{- range $what, $dir := dict "agent.dataDir" .Values.agent.dataDir "csi.kubeletDir" .Values.csi.kubeletDir }}
{{- $other := printf "%s/" (trimSuffix "/" $dir) }}
{{- if or (hasPrefix $other $socketDir) (hasPrefix $socketDir $other) }}
{{- fail (printf "agent.socketDir %s must be a dedicated directory: it overlaps %s %s (the CSI driver mounts the whole socket directory into every pod)" $.Values.agent.socketDir $what $dir) }}
{{- end }}
{{- end }}
{{- if and .Values.federation.bundleEndpoint.enabled (eq .Values.federation.bundleEndpoint.profile "https_web") (not .Values.federation.bundleEndpoint.tlsSecretName) }}
{{- fail "federation.bundleEndpoint.profile https_web needs federation.bundleEndpoint.tlsSecretName (a kubernetes.io/tls Secret, e.g. from a cert-manager Certificate)" }}
{{- end }}
{{- if .Values.oidc.enabled }}
{{- $_ := required "oidc.issuer is required when oidc.enabled: the https URL relying parties are configured with" .Values.oidc.issuer }}
{{- if eq (not .Values.oidc.tlsSecretName) (not .Values.oidc.insecureHttp) }}
{{- fail "oidc.enabled needs exactly one of oidc.tlsSecretName (TLS in the server) or oidc.insecureHttp (TLS terminated by an Ingress)" }}
{{- end }}
{{- end }}
{{- end }}
