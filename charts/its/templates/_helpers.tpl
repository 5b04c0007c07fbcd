{{/*
Shared helpers. Every object is named <prefix>-<component>; the prefix is the release name unless
fullnameOverride is set.
*/}}

{{- define "its.prefix" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of a component's objects. Call with (dict "root" $ "component" "redis"). */}}
{{- define "its.componentName" -}}
{{- printf "%s-%s" (include "its.prefix" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "its.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels shared by every object of the release. Call with the root context. */}}
{{- define "its.commonLabels" -}}
helm.sh/chart: {{ include "its.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: its
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component. Call with (dict "root" $ "component" "redis"). */}}
{{- define "its.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component. Call with (dict "root" $ "component" "redis" "version" "x"). */}}
{{- define "its.labels" -}}
{{ include "its.commonLabels" .root }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .version | default .root.Chart.AppVersion | toString | trunc 63 | quote }}
{{- end -}}

{{/* Selects every pod of the release (NetworkPolicy peers). Call with the root context. */}}
{{- define "its.releasePodSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Tag of an ITS image: its own tag, else global.imageTag, else the chart's appVersion.
Call with (dict "root" $ "image" $image). */}}
{{- define "its.imageTag" -}}
{{- .image.tag | default .root.Values.global.imageTag | default .root.Chart.AppVersion | toString -}}
{{- end -}}

{{/* Full reference of an ITS image (global registry prefix applied).
Call with (dict "root" $ "image" $image). */}}
{{- define "its.image" -}}
{{- $registry := .root.Values.global.imageRegistry | trimSuffix "/" -}}
{{- $ref := printf "%s:%s" .image.repository (include "its.imageTag" .) -}}
{{- if $registry -}}
{{- printf "%s/%s" $registry $ref -}}
{{- else -}}
{{- $ref -}}
{{- end -}}
{{- end -}}

{{- define "its.imagePullPolicy" -}}
{{- .image.pullPolicy | default .root.Values.global.imagePullPolicy -}}
{{- end -}}

{{/* Reference of a third-party image (redis, timescaledb): repository:tag as given. */}}
{{- define "its.thirdPartyImage" -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}

{{- define "its.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container securityContext: non-root, read-only root filesystem, no privilege escalation,
every capability dropped, seccomp RuntimeDefault. Call with the root context. */}}
{{- define "its.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/* The writable /tmp of every container (the root filesystem is read-only). */}}
{{- define "its.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{- define "its.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* ----- secrets ----- */}}

{{- define "its.redis.secretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "its.componentName" (dict "root" . "component" "redis")) -}}
{{- end -}}

{{- define "its.redis.secretKey" -}}
{{- if .Values.redis.auth.existingSecret -}}
{{- .Values.redis.auth.existingSecretPasswordKey -}}
{{- else -}}
redis-password
{{- end -}}
{{- end -}}

{{- define "its.timescaledb.secretName" -}}
{{- .Values.timescaledb.auth.existingSecret | default (include "its.componentName" (dict "root" . "component" "timescaledb")) -}}
{{- end -}}

{{- define "its.timescaledb.secretKey" -}}
{{- if .Values.timescaledb.auth.existingSecret -}}
{{- .Values.timescaledb.auth.existingSecretPasswordKey -}}
{{- else -}}
password
{{- end -}}
{{- end -}}

{{/* True ("true") when a Polygon API key is configured; the feed then leaves the cluster. */}}
{{- define "its.polygon.enabled" -}}
{{- if or .Values.polygon.existingSecret .Values.polygon.apiKey -}}true{{- end -}}
{{- end -}}

{{- define "its.polygon.secretName" -}}
{{- .Values.polygon.existingSecret | default (include "its.componentName" (dict "root" . "component" "polygon")) -}}
{{- end -}}

{{- define "its.polygon.secretKey" -}}
{{- if .Values.polygon.existingSecret -}}
{{- .Values.polygon.existingSecretKey -}}
{{- else -}}
api-key
{{- end -}}
{{- end -}}

{{/*
A generated password that survives upgrades: reuse the value stored in the live Secret (lookup),
else generate one. Call with (dict "root" $ "name" $secretName "key" $key).
Offline rendering (helm template, lint) has no cluster, so it always generates.
*/}}
{{- define "its.persistentPassword" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* ----- connection settings (no passwords inside) ----- */}}

{{- define "its.redis.url" -}}
{{- printf "redis://%s:6379/0" (include "its.componentName" (dict "root" . "component" "redis")) -}}
{{- end -}}

{{- define "its.database.host" -}}
{{- include "its.componentName" (dict "root" . "component" "timescaledb") -}}
{{- end -}}

{{- define "its.database.url" -}}
{{- printf "postgresql://%s@%s:5432/%s" .Values.timescaledb.username (include "its.database.host" .) .Values.timescaledb.database -}}
{{- end -}}

{{/* Secret files mounted into ITS containers. */}}
{{- define "its.secretsDir" -}}/var/run/secrets/its{{- end -}}

{{/*
checksum/secret: the inputs of every Secret the pods read. Generated passwords are kept across
upgrades, so hashing the inputs (not the random render) keeps the checksum stable until a
secret setting really changes (e.g. a Polygon key is added).
*/}}
{{- define "its.secretChecksum" -}}
{{- $inputs := dict "redis" .Values.redis.auth "timescaledb" .Values.timescaledb.auth "polygon" (dict "existingSecret" .Values.polygon.existingSecret "existingSecretKey" .Values.polygon.existingSecretKey "apiKey" .Values.polygon.apiKey) -}}
{{- toJson $inputs | sha256sum -}}
{{- end -}}

{{- define "its.configChecksum" -}}
{{- include (print .Template.BasePath "/configmap.yaml") . | sha256sum -}}
{{- end -}}
