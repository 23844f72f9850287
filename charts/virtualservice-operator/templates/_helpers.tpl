{{/*
Names are fixed by the operations guide (every kubectl command in it names them), so
they do not follow the release name: one release of this chart per cluster.
*/}}
{{- define "vso.name" -}}virtualservice-operator{{- end -}}

{{- define "vso.namespace" -}}
{{- default .Release.Namespace .Values.namespace -}}
{{- end -}}

{{- define "vso.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vso.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* The labels every object of deployments/deployment.yaml carries, plus Helm's own. */}}
{{- define "vso.labels" -}}
app.kubernetes.io/name: virtualservice-operator
app.kubernetes.io/part-of: virtualservice-operator
helm.sh/chart: {{ include "vso.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Pod's labels: the selector label "app" plus the recommended ones. */}}
{{- define "vso.podLabels" -}}
app: virtualservice-operator
app.kubernetes.io/name: virtualservice-operator
app.kubernetes.io/instance: virtualservice-operator
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: virtualservice-operator
{{- end -}}

{{/* config.yaml of the ConfigMap: only the keys that are set (defaults stay the operator's). */}}
{{- define "vso.config" -}}
{{- $c := .Values.config -}}
{{- $out := dict "defaultNamespace" (required "config.defaultNamespace is required" $c.defaultNamespace) -}}
{{- $_ := set $out "developerNamespaces" (default (list) $c.developerNamespaces) -}}
{{- $_ := set $out "enablePlaceholderServices" (default false $c.enablePlaceholderServices) -}}
{{- with $c.virtualServiceTemplate }}{{ $_ := set $out "virtualServiceTemplate" . }}{{ end -}}
{{- with $c.routing }}{{ $_ := set $out "routing" . }}{{ end -}}
{{- with $c.placeholder }}{{ $_ := set $out "placeholder" . }}{{ end -}}
{{- toYaml $out -}}
{{- end -}}
