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

{{/* Reference of a third-party image (redis, timescaledb, collector, ...):
[global.thirdPartyRegistry/]repository:tag[@digest]. The tag names the exact version; the digest,
when set, makes the pull immutable (a tag can be re-pushed, a digest cannot).
Call with (dict "root" $ "image" $image). */}}
{{- define "its.thirdPartyImage" -}}
{{- $registry := .root.Values.global.thirdPartyRegistry | default "" | trimSuffix "/" -}}
{{- $ref := printf "%s:%s" .image.repository (toString .image.tag) -}}
{{- with .image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end -}}
{{- if $registry -}}
{{- printf "%s/%s" $registry $ref -}}
{{- else -}}
{{- $ref -}}
{{- end -}}
{{- end -}}

{{/* The singletons: components whose state lives in one process (the trader's risk state and
order ids, the features' per-symbol windows, inference's recurrent state). They run one replica
with `strategy: Recreate` (the old pod stops before the new one starts); values.schema.json caps
their replicas at 1 (definitions.singletonService). Both go once leader election exists. */}}
{{- define "its.singletons" -}}
trader,inference,features
{{- end -}}

{{/* Bytes of a Kubernetes memory quantity ("384Mi", "1Gi", "500M", "1073741824"). */}}
{{- define "its.memoryBytes" -}}
{{- $q := toString . -}}
{{- $unit := regexFind "[A-Za-z]+$" $q -}}
{{- $number := trimSuffix $unit $q -}}
{{- $factors := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if not (hasKey $factors $unit) -}}
{{- fail (printf "memory quantity %q: unit %q is not one of k, M, G, T, Ki, Mi, Gi, Ti" $q $unit) -}}
{{- end -}}
{{- mulf (float64 $number) (index $factors $unit) | int64 -}}
{{- end -}}

{{/* Redis maxmemory in mb (MiB): redis.maxmemory when given, else maxmemoryPercent of the
container's memory limit. The rest of the limit is headroom for the AOF-rewrite / RDB fork
(copy-on-write pages), the replication and client buffers and the allocator's fragmentation. */}}
{{- define "its.redis.maxmemoryMb" -}}
{{- $limit := include "its.memoryBytes" .Values.redis.resources.limits.memory | int64 -}}
{{- $limitMb := div $limit 1048576 -}}
{{- $mb := 0 -}}
{{- if .Values.redis.maxmemory -}}
{{- $unit := regexFind "[a-z]+$" .Values.redis.maxmemory -}}
{{- $number := trimSuffix $unit .Values.redis.maxmemory | int64 -}}
{{- $mb = div (mul $number (index (dict "kb" 1024 "mb" 1048576 "gb" 1073741824) $unit)) 1048576 -}}
{{- else -}}
{{- $mb = div (mul $limitMb (int .Values.redis.maxmemoryPercent)) 100 -}}
{{- end -}}
{{- if gt (mul $mb 100) (mul $limitMb 75) -}}
{{- fail (printf "redis maxmemory %dmb is more than 75%% of the memory limit %s: the AOF rewrite fork needs the rest (raise redis.resources.limits.memory or lower redis.maxmemory)" $mb .Values.redis.resources.limits.memory) -}}
{{- end -}}
{{- $mb -}}
{{- end -}}

{{/*
Guard for a StatefulSet's volumeClaimTemplates, which Kubernetes never lets change: when the live
StatefulSet (lookup) has a claim template that differs from the values (size, storageClass,
accessModes), fail with what to do instead of letting `helm upgrade` die on "updates to
statefulset spec ... are forbidden". Offline renders (no cluster) find nothing and pass.
Call with (dict "root" $ "component" "redis" "values" "redis" "persistence" $p "live" $liveSts).
*/}}
{{- define "its.persistenceGuard" -}}
{{- $live := .live | default dict -}}
{{- $templates := dig "spec" "volumeClaimTemplates" list $live -}}
{{- if $templates -}}
{{- $claim := index $templates 0 -}}
{{- $spec := $claim.spec | default dict -}}
{{- $liveSize := dig "resources" "requests" "storage" "" $spec | toString -}}
{{- $liveClass := $spec.storageClassName | default "" -}}
{{- $liveModes := $spec.accessModes | default list | toJson -}}
{{- $p := .persistence -}}
{{- $size := $p.size | toString -}}
{{- $class := $p.storageClass | default "" -}}
{{- $modes := $p.accessModes | default (list "ReadWriteOnce") | toJson -}}
{{- /* Compared in bytes: the API server stores quantities canonically (8192Mi reads 8Gi). */ -}}
{{- $sameSize := eq (include "its.memoryBytes" $liveSize) (include "its.memoryBytes" $size) -}}
{{- if or (not $sameSize) (ne $liveClass $class) (ne $liveModes $modes) -}}
{{- $sts := include "its.componentName" (dict "root" .root "component" .component) -}}
{{- fail (printf "%s.persistence changed (live: size %s, storageClass %q, accessModes %s; values: size %s, storageClass %q, accessModes %s), but a StatefulSet's volumeClaimTemplates cannot change. Keep the live values, or follow docs/kubernetes.md (Changing persistence): resize the PVC data-%s-0 (kubectl edit; its StorageClass needs allowVolumeExpansion), then `kubectl delete statefulset %s --cascade=orphan` (the pod and its data stay) and run the upgrade again with the new size." .values $liveSize $liveClass $liveModes $size $class $modes $sts $sts) -}}
{{- end -}}
{{- end -}}
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

{{/* The internet ports the alerter's notifiers use, comma-separated ("" = none configured):
443 with a Slack webhook Secret, alerting.smtp.port with an SMTP host. */}}
{{- define "its.alerting.notifyPorts" -}}
{{- $ports := list -}}
{{- if .Values.alerting.slack.existingSecret -}}{{- $ports = append $ports 443 -}}{{- end -}}
{{- if .Values.alerting.smtp.host -}}{{- $ports = append $ports (int .Values.alerting.smtp.port) -}}{{- end -}}
{{- $ports | uniq | join "," -}}
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
{{- if .Values.redis.external.url -}}
{{- .Values.redis.external.url -}}
{{- else -}}
{{- printf "redis://%s:6379/0" (include "its.componentName" (dict "root" . "component" "redis")) -}}
{{- end -}}
{{- end -}}

{{- define "its.database.host" -}}
{{- .Values.timescaledb.external.host | default (include "its.componentName" (dict "root" . "component" "timescaledb")) -}}
{{- end -}}

{{- define "its.database.port" -}}
{{- if .Values.timescaledb.external.host -}}{{- .Values.timescaledb.external.port -}}{{- else -}}5432{{- end -}}
{{- end -}}

{{- define "its.database.url" -}}
{{- printf "postgresql://%s@%s:%s/%s" .Values.timescaledb.username (include "its.database.host" .) (include "its.database.port" .) .Values.timescaledb.database -}}
{{- end -}}

{{/* External stores bring their own password: an existing Secret is required. */}}
{{- define "its.validateExternalStores" -}}
{{- if and .Values.redis.external.url (not .Values.redis.auth.existingSecret) -}}
{{- fail "redis.external.url needs redis.auth.existingSecret (the external Redis' password)" -}}
{{- end -}}
{{- if and .Values.redis.external.cluster (not .Values.redis.external.url) -}}
{{- fail "redis.external.cluster needs redis.external.url (the in-chart Redis is one node)" -}}
{{- end -}}
{{- if and .Values.timescaledb.external.host (not .Values.timescaledb.auth.existingSecret) -}}
{{- fail "timescaledb.external.host needs timescaledb.auth.existingSecret (the database password)" -}}
{{- end -}}
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
