{{/*
The chart name, for `app.kubernetes.io/name` and `part-of` labels: "rouse".
*/}}
{{- define "rouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Object name prefix: the release name when it contains the chart name (release `rouse` gives
rouse-proxy, rouse-controller, ... as in the kustomize base), else `<release>-<chart>`.
Truncated so `<prefix>-controller-leader-election` stays a valid name.
*/}}
{{- define "rouse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "rouse.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Helm's own labels, on every object and pod template. The kustomize base has none of these;
they are the only labels that differ (tests/tests/k8s_helm.rs strips exactly these four).
Never in selectors: those stay equal to the base's (and immutable across upgrades).
*/}}
{{- define "rouse.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of a component: `include "rouse.selector" (list . "proxy")`. */}}
{{- define "rouse.selector" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
app.kubernetes.io/name: {{ include "rouse.name" $root }}-{{ $component }}
app.kubernetes.io/component: {{ $component }}
{{- end -}}

{{/* All labels of a component's objects: selector labels, part-of, Helm's. */}}
{{- define "rouse.labels" -}}
{{- $root := index . 0 -}}
{{ include "rouse.selector" . }}
app.kubernetes.io/part-of: {{ include "rouse.name" $root }}
{{ include "rouse.helmLabels" $root }}
{{- end -}}

{{/* Image reference of a component: `include "rouse.image" (list . .Values.proxy.image)`. */}}
{{- define "rouse.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* The port of a `host:port` listen address, as a number. */}}
{{- define "rouse.port" -}}
{{- regexFind "[0-9]+$" . | int -}}
{{- end -}}

{{/*
Optional flags as env vars: `include "rouse.optionalEnv" (list (list "ROUSE_THREADS" .Values.proxy.threads) ...)`
renders an EnvVar list item for each value that is not null (so the binary's own default applies
otherwise), nothing when all are null. A list value is joined with commas. Numbers are printed as
integers (Helm reads YAML numbers as floats: 268435456 would print as 2.68435456e+08).
*/}}
{{- define "rouse.optionalEnv" -}}
{{- $env := list -}}
{{- range $pair := . -}}
{{- $value := index $pair 1 -}}
{{- if kindIs "slice" $value -}}
{{- if $value -}}
{{- $env = append $env (dict "name" (index $pair 0) "value" (join "," $value)) -}}
{{- end -}}
{{- else if kindIs "float64" $value -}}
{{- $env = append $env (dict "name" (index $pair 0) "value" ($value | int64 | toString)) -}}
{{- else if not (kindIs "invalid" $value) -}}
{{- $env = append $env (dict "name" (index $pair 0) "value" ($value | toString)) -}}
{{- end -}}
{{- end -}}
{{- with $env -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/* The proxies' NATS ConfigMap (the name the proxy Deployment reads, with or without the chart's own). */}}
{{- define "rouse.natsConfigMap" -}}
{{- include "rouse.fullname" . }}-proxy-nats
{{- end -}}

{{/* Where the controller's Lease lives: leaseNamespace, else the release namespace. */}}
{{- define "rouse.leaseNamespace" -}}
{{- default .Release.Namespace .Values.controller.leaseNamespace -}}
{{- end -}}

{{/* The pod spec fields every component shares, from its values. */}}
{{- define "rouse.podScheduling" -}}
{{- $v := . -}}
{{- with $v.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
