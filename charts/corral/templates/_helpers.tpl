{{/* The release's base name. */}}
{{- define "corral.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "corral.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "corral.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "corral.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The Service's in-cluster DNS name. */}}
{{- define "corral.host" -}}
{{ include "corral.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end -}}

{{- define "corral.pkiSecret" -}}
{{ .Values.tls.existingSecret | default (printf "%s-pki" (include "corral.fullname" .)) }}
{{- end -}}

{{- define "corral.tokensSecret" -}}
{{ .Values.auth.existingSecret | default (printf "%s-tokens" (include "corral.fullname" .)) }}
{{- end -}}
