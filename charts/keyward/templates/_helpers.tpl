{{/* Labels on every object. */}}
{{- define "keyward.labels" -}}
app.kubernetes.io/name: keyward
app.kubernetes.io/part-of: keyward
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The image reference of a component: repository@digest, else repository:tag (default appVersion). */}}
{{- define "keyward.image" -}}
{{- $img := index .root.Values.image .component -}}
{{- if $img.digest -}}{{ $img.repository }}@{{ $img.digest }}{{- else -}}{{ $img.repository }}:{{ $img.tag | default .root.Chart.AppVersion }}{{- end -}}
{{- end }}

{{/* The documents of a chart file (generated from config/default), in the release namespace. */}}
{{- define "keyward.docs" -}}
{{- range $doc := regexSplit "\n---\n" (.root.Files.Get .file | replace "keyward-system" .root.Release.Namespace) -1 }}
{{- $o := fromYaml $doc }}
{{- if $o.kind }}
---
{{ toYaml $o }}
{{- end }}
{{- end }}
{{- end }}
