{{/*
Names, labels, the watched namespaces and the operator's RBAC rules.
*/}}

{{- define "ftstudy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object's name: <release>-ftstudy, or <release> when it already contains the chart name. */}}
{{- define "ftstudy.fullname" -}}
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

{{/* Cluster-scoped objects are shared by every namespace: their names carry the release namespace. */}}
{{- define "ftstudy.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "ftstudy.fullname" .) }}
{{- end }}

{{- define "ftstudy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ftstudy.labels" -}}
helm.sh/chart: {{ include "ftstudy.chart" . | quote }}
{{ include "ftstudy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: ftstudy
{{- end }}

{{/* The operator's pods; other components add their own app.kubernetes.io/component. */}}
{{- define "ftstudy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ftstudy.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{- define "ftstudy.operatorSelectorLabels" -}}
{{ include "ftstudy.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ftstudy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ftstudy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing ServiceAccount to run as (serviceAccount.create is false)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ftstudy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The namespaces the operator watches, one per line: watchNamespaces, else the release namespace; nothing when
clusterWide. Also the place where values the schema cannot judge are refused, with what to change.
*/}}
{{- define "ftstudy.watchedNamespaces" -}}
{{- if and .Values.clusterWide .Values.watchNamespaces }}
{{- fail (printf "clusterWide: true watches every namespace, so watchNamespaces must be empty (it is %s): set one or the other" (toJson .Values.watchNamespaces)) }}
{{- end }}
{{- if not .Values.clusterWide }}
{{- range (.Values.watchNamespaces | default (list .Release.Namespace)) | uniq }}
{{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
What the operator may do in each watched namespace: exactly ftstudy.kube.rbac.rules(storage Secrets)
(operator/ftstudy/kube/rbac.py, which says why each rule is needed); Secrets: only trialPolicy.storageSecrets.
tests/test_chart.py renders the chart and compares, so the two cannot drift.
*/}}
{{- define "ftstudy.rules" -}}
- apiGroups: ["ftstudy.io"]
  resources: ["finetunestudies"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["ftstudy.io"]
  resources: ["finetunestudies/status"]
  verbs: ["patch"]
- apiGroups: ["ftstudy.io"]
  resources: ["finetunestudies/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
  resourceNames: {{ .Values.trialPolicy.storageSecrets | default (list .Values.database.secretName) | uniq | sortAlpha | toJson }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- if .Values.kueue.enabled }}
{{- /* ftstudy.kube.rbac.KUEUE_RULES */}}
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["localqueues"]
  verbs: ["get"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list"]
{{- end }}
{{- end }}

{{/* In the release namespace: leader election (ftstudy.kube.rbac.LEADER_ELECTION_RULES). */}}
{{- define "ftstudy.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/* The report endpoint's TLS Secret (reports.tlsSecretName), and what the operator may do with it. */}}
{{- define "ftstudy.reportTLSSecret" -}}
{{- .Values.reports.tlsSecretName | default (printf "%s-report-tls" (include "ftstudy.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{/* ftstudy.kube.rbac.database_password_rules(secret): in the release namespace, with the bundled PostgreSQL and no
given password (the operator generates it into this Secret). */}}
{{- define "ftstudy.databasePasswordRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "update"]
  resourceNames: [{{ include "ftstudy.postgresql.fullname" . | quote }}]
{{- end }}

{{/* ftstudy.kube.rbac.report_tls_rules(secret): in the release namespace, with reports.enabled. */}}
{{- define "ftstudy.reportTLSRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: {{ if .Values.reports.certManager.enabled }}["get"]{{ else }}["get", "update"]{{ end }}
  resourceNames: [{{ include "ftstudy.reportTLSSecret" . | quote }}]
{{- end }}

{{/* ftstudy.kube.rbac.TOKEN_REVIEW_RULES: cluster-wide (TokenReviews are not namespaced), with reports.enabled. */}}
{{- define "ftstudy.tokenReviewRules" -}}
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
{{- end }}

{{- define "ftstudy.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "ftstudy.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ftstudy.postgresql.selectorLabels" -}}
{{ include "ftstudy.selectorLabels" . }}
app.kubernetes.io/component: postgresql
{{- end }}

{{/* The bundled PostgreSQL's pg_hba.conf (first match wins). */}}
{{- define "ftstudy.postgresql.hba" -}}
{{- $auth := .Values.postgresql.auth -}}
# TYPE  DATABASE  USER  ADDRESS  METHOD
local all all trust
{{- range .Values.postgresql.hba.sources }}
host {{ $auth.database }} {{ $auth.username }} {{ . }} scram-sha-256
{{- end }}
host all all 0.0.0.0/0 reject
host all all ::/0 reject
{{- end }}
