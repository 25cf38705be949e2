{{/* Chart name, overridable. */}}
{{- define "ferrotel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name used for the operator's objects. */}}
{{- define "ferrotel.fullname" -}}
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

{{- define "ferrotel.operatorName" -}}
{{- printf "%s-operator" (include "ferrotel.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The probes' ClusterRole and ClusterRoleBinding (see probe-rbac.yaml). */}}
{{- define "ferrotel.probeRbacName" -}}
{{- printf "%s-probe" (include "ferrotel.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ferrotel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart renders. */}}
{{- define "ferrotel.labels" -}}
helm.sh/chart: {{ include "ferrotel.chart" . }}
app.kubernetes.io/name: {{ include "ferrotel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ferrotel
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector of the operator's pods: stable across upgrades. */}}
{{- define "ferrotel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrotel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ferrotel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferrotel.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: the digest wins, an empty
tag means the chart's appVersion. Call with (dict "image" .x "root" $).
*/}}
{{- define "ferrotel.image" -}}
{{- $img := .image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "ferrotel.collectorNamespace" -}}
{{- default .Release.Namespace .Values.collector.namespace }}
{{- end }}

{{- define "ferrotel.instrumentationNamespace" -}}
{{- default .Release.Namespace .Values.instrumentation.namespace }}
{{- end }}

{{/* True when the cluster serves the Prometheus Operator API kind given. */}}
{{- define "ferrotel.hasMonitoringKind" -}}
{{- if .root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind) }}true{{ end }}
{{- end }}

{{/*
The operator's command-line arguments. One place, so the Deployment and the
tests (which run the operator binary with exactly these) cannot disagree.
*/}}
{{- define "ferrotel.operatorArgs" -}}
- --log-level={{ .Values.operator.logLevel }}
- --log-format=json
- --metrics-addr=0.0.0.0:{{ .Values.operator.metrics.port }}
- --health-addr=0.0.0.0:{{ .Values.operator.health.port }}
{{- if .Values.operator.leaderElection.enabled }}
- --leader-elect
- --leader-elect-namespace={{ .Release.Namespace }}
{{- end }}
{{- with .Values.operator.watchNamespace }}
- --watch-namespace={{ . }}
{{- end }}
- --default-collector-image={{ include "ferrotel.image" (dict "image" .Values.defaultImages.collector "root" .) }}
- --default-probe-image={{ include "ferrotel.image" (dict "image" .Values.defaultImages.probe "root" .) }}
- --probe-cluster-role={{ include "ferrotel.probeRbacName" . }}
- --probe-cluster-role-binding={{ include "ferrotel.probeRbacName" . }}
{{- with .Values.operator.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The operator's rules on namespaced resources (see rbac.yaml). */}}
{{- define "ferrotel.namespacedRules" -}}
# Its own kinds: watch them, read the collector an Instrumentation points
# at, add the Instrumentation finalizer, write status.
- apiGroups: [ferrotel.io]
  resources: [telemetrycollectors]
  verbs: [get, list, watch]
- apiGroups: [ferrotel.io]
  resources: [instrumentations]
  verbs: [list, watch, patch]
- apiGroups: [ferrotel.io]
  resources: [telemetrycollectors/status, instrumentations/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin allows only to
# whoever may update the owner's finalizers.
- apiGroups: [ferrotel.io]
  resources: [telemetrycollectors/finalizers, instrumentations/finalizers]
  verbs: [update]
# The children: server-side apply (patch; create when new), the watches
# of their owners' controllers, pruning (list, delete).
- apiGroups: [""]
  resources: [configmaps, services, serviceaccounts]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [daemonsets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
