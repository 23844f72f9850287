{{/*
Names follow the release (the usual fullname rule), so two releases coexist. With the
release name "virtualservice-operator" they are the operations guide's own names:
Deployment virtualservice-operator, ClusterRole virtualservice-operator-role, ...
*/}}
{{- define "vso.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vso.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>", the suffix kept whole when the fullname is long. */}}
{{- define "vso.suffixed" -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s" (include "vso.fullname" (index . 0) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}

{{- define "vso.configMapName" -}}{{ include "vso.suffixed" (list . "config") }}{{- end -}}
{{- define "vso.leaseName" -}}{{ include "vso.suffixed" (list . "leader") }}{{- end -}}

{{- define "vso.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vso.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vso.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* One version: the image tag defaults to "v" + appVersion (the operator's __version__). */}}
{{- define "vso.imageTag" -}}
{{- default (printf "v%s" .Chart.AppVersion) .Values.image.tag -}}
{{- end -}}

{{/* The operator's image: repository:tag, or repository@digest when image.digest is set. */}}
{{- define "vso.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "vso.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{/* The selector: the guide's pod label (app: virtualservice-operator for the default release). */}}
{{- define "vso.selectorLabels" -}}
app: {{ include "vso.fullname" . }}
{{- end -}}

{{/* Labels on every object: the recommended app.kubernetes.io set, the release as instance. */}}
{{- define "vso.labels" -}}
app.kubernetes.io/name: {{ include "vso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: virtualservice-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "vso.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Pod's labels: the selector plus the recommended ones. */}}
{{- define "vso.podLabels" -}}
{{ include "vso.selectorLabels" . }}
app.kubernetes.io/name: {{ include "vso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: virtualservice-operator
{{- end -}}

{{/* The namespaces whose Services the operator writes: for rbac.scope=namespaced. */}}
{{- define "vso.writeNamespaces" -}}
{{- $names := .Values.rbac.namespaces -}}
{{- if not $names -}}
{{- if not .Values.config.create -}}
{{- fail "rbac.scope=namespaced with config.create=false: list the namespaces the operator writes in rbac.namespaces (your ConfigMap's defaultNamespace and developerNamespaces)" -}}
{{- end -}}
{{- $names = prepend (default (list) .Values.config.developerNamespaces) .Values.config.defaultNamespace -}}
{{- end -}}
{{- if not (has .Values.config.defaultNamespace $names) -}}
{{- fail (printf "rbac.namespaces must include config.defaultNamespace (%s): the operator writes its VirtualServices there" .Values.config.defaultNamespace) -}}
{{- end -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{/* config.yaml of the ConfigMap: only the keys that are set (defaults stay the operator's). */}}
{{- define "vso.config" -}}
{{- $c := .Values.config -}}
{{- $out := dict "defaultNamespace" (required "config.defaultNamespace is required (the namespace whose Services get a VirtualService)" $c.defaultNamespace) -}}
{{- $_ := set $out "developerNamespaces" (default (list) $c.developerNamespaces) -}}
{{- $_ := set $out "enablePlaceholderServices" (default false $c.enablePlaceholderServices) -}}
{{- with $c.virtualServiceTemplate }}{{ $_ := set $out "virtualServiceTemplate" . }}{{ end -}}
{{- with $c.routing }}{{ $_ := set $out "routing" . }}{{ end -}}
{{- with $c.placeholder }}{{ $_ := set $out "placeholder" . }}{{ end -}}
{{- with $c.serviceSelector }}{{ $_ := set $out "serviceSelector" . }}{{ end -}}
{{- if $c.allowHostConflicts }}{{ $_ := set $out "allowHostConflicts" true }}{{ end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The metrics Service's in-cluster name: what a scraper verifies the certificate against. */}}
{{- define "vso.metricsHost" -}}
{{- printf "%s.%s.svc" (include "vso.suffixed" (list . "metrics")) .Release.Namespace -}}
{{- end -}}

{{/* With metrics.secure: the kubernetes.io/tls Secret holding tls.crt, tls.key and ca.crt. */}}
{{- define "vso.metricsCertSecret" -}}
{{- default (include "vso.suffixed" (list . "metrics-cert")) .Values.metrics.certSecret -}}
{{- end -}}

{{/* With metrics.secure and a ServiceMonitor: the token Secret Prometheus scrapes with. */}}
{{- define "vso.scraperName" -}}{{ include "vso.suffixed" (list . "metrics-scraper") }}{{- end -}}
