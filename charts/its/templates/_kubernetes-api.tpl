{{- /*
ITS's own use of the Kubernetes API: which components talk to it, and the environment they get.
*/ -}}

{{- define "its.leaderElection.singletons" -}}trader,inference,features{{- end -}}

{{- /* "true" when the component talks to the Kubernetes API (token mounted, Role bound). */ -}}
{{- define "its.kubernetesApi.uses" -}}
{{- $root := .root -}}
{{- $singletons := splitList "," (include "its.leaderElection.singletons" $root) -}}
{{- if and (eq .component "dashboard") $root.Values.kubernetesApi.clusterPanel -}}
true
{{- else if and $root.Values.leaderElection.enabled (has .component $singletons) -}}
true
{{- end -}}
{{- end -}}

{{- /* Extra env (a YAML list) of a component that talks to the API. */ -}}
{{- define "its.kubernetesApi.env" -}}
{{- $root := .root -}}
{{- $singletons := splitList "," (include "its.leaderElection.singletons" $root) -}}
{{- $le := $root.Values.leaderElection -}}
{{- if and (eq .component "dashboard") $root.Values.kubernetesApi.clusterPanel }}
- name: ITS_DASHBOARD_CLUSTER_SELECTOR
  value: {{ printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s" $root.Chart.Name $root.Release.Name | quote }}
{{- else if and $le.enabled (has .component $singletons) }}
- name: ITS_LEADER_ELECTION
  value: kubernetes
- name: ITS_LEADER_LEASE_NAME
  value: {{ .fullname | quote }}
- name: ITS_LEADER_LEASE_S
  value: {{ $le.leaseSeconds | toString | quote }}
- name: ITS_LEADER_RENEW_S
  value: {{ $le.renewSeconds | toString | quote }}
- name: ITS_LEADER_RENEW_DEADLINE_S
  value: {{ $le.renewDeadlineSeconds | toString | quote }}
- name: ITS_LEADER_RETRY_S
  value: {{ $le.retrySeconds | toString | quote }}
{{- end }}
{{- end -}}

{{- /* Inference reads the bundle promoted by its-ops from the ConfigMap <release>-model
(its_common.promotion), mounted optional: it exists after the first promotion. */ -}}
{{- define "its.ops.promotion" -}}
{{- and .root.Values.kubernetesApi.opsConfigMap (eq .component "inference") -}}
{{- end -}}

{{- define "its.ops.env" -}}
{{- if eq (include "its.ops.promotion" .) "true" }}
- name: ITS_INFERENCE_BUNDLE_VERSION_FILE
  value: /etc/its/model/bundle
{{- end }}
{{- end -}}

{{- define "its.ops.volumeMounts" -}}
{{- if eq (include "its.ops.promotion" .) "true" }}
- name: promoted-model
  mountPath: /etc/its/model
  readOnly: true
{{- end }}
{{- end -}}

{{- define "its.ops.volumes" -}}
{{- if eq (include "its.ops.promotion" .) "true" }}
- name: promoted-model
  configMap:
    name: {{ .root.Release.Name }}-model
    optional: true
{{- end }}
{{- end -}}
