{{/* Names. With the release named like the chart (helm install mcp-mesh-registry ...), the
objects are named as in k8s/base: mcp-mesh-registry, mcp-mesh-registry-headless. */}}
{{- define "registry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "registry.fullname" -}}
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

{{/* StatefulSet pod names are <fullname>-<ordinal>, and a pod's hostname must fit in 63. */}}
{{- define "registry.headless" -}}
{{- printf "%s-headless" (include "registry.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "registry.configName" -}}
{{- printf "%s-config" (include "registry.fullname" .) -}}
{{- end -}}

{{- define "registry.secretName" -}}
{{- default (printf "%s-secret" (include "registry.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{- define "registry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "registry.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "registry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "registry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "registry.labels" -}}
{{ include "registry.selectorLabels" . }}
app.kubernetes.io/part-of: mcp-mesh
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The initial Raft cluster size (REGISTRY_REPLICAS): fixed at install. On upgrade it is read
back from the running StatefulSet, so changing .Values.replicas scales by join/remove instead of
redefining the initial cluster (which could let new pods elect a second leader). */}}
{{- define "registry.initialClusterSize" -}}
{{- if .Values.initialClusterSize -}}
{{- .Values.initialClusterSize | toString -}}
{{- else -}}
{{- $size := .Values.replicas | toString -}}
{{- $sts := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "registry.fullname" .) -}}
{{- if $sts -}}
{{- range $sts.spec.template.spec.containers -}}
{{- range (default list .env) -}}
{{- if eq .name "REGISTRY_REPLICAS" -}}{{- $size = .value -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $size -}}
{{- end -}}
{{- end -}}

{{/* The Secret's values, given in values.yaml or --set, never generated: a generated value is
new at every render (`lookup` sees no cluster under `helm template` or a GitOps controller), so
the replicas' ENCRYPTION_KEY would change at every sync. */}}
{{- define "registry.requiredSecret" -}}
{{- if eq .Values.database.type "postgresql" -}}
{{- $_ := required "authToken is empty: set authToken (e.g. --set authToken=$(openssl rand -hex 32)), or existingSecret to the name of a Secret with the key AUTH_TOKEN (database.type=postgresql needs no ENCRYPTION_KEY)" .Values.authToken -}}
{{- else -}}
{{- $how := "set encryptionKey and authToken (e.g. --set encryptionKey=$(openssl rand -base64 32) --set authToken=$(openssl rand -hex 32)), or existingSecret to the name of a Secret with the keys ENCRYPTION_KEY and AUTH_TOKEN" -}}
{{- $key := required (printf "encryptionKey is empty: %s" $how) .Values.encryptionKey -}}
{{- if lt (len $key) 32 -}}
{{- fail (printf "encryptionKey is too short (%d bytes): at least 32 are needed; %s" (len $key) $how) -}}
{{- end -}}
{{- $_ := required (printf "authToken is empty: %s" $how) .Values.authToken -}}
{{- end -}}
{{- end -}}

{{/* database.type=postgresql: where the database is; the password comes from a Secret the
chart does not make (database.existingSecret, key database.passwordKey). */}}
{{- define "registry.requiredDatabase" -}}
{{- $_ := required "database.host is empty: the PostgreSQL server of database.type=postgresql" .Values.database.host -}}
{{- $_ := required "database.existingSecret is empty: the Secret holding the PostgreSQL password (key database.passwordKey), e.g. the guide's postgres-secret" .Values.database.existingSecret -}}
{{- end -}}

{{/* config keys that mean something only with the Raft StatefulSet (and DATABASE_TYPE, which
database.type sets): the ConfigMap leaves them out with database.type=postgresql, where
ENABLE_LEADER_ELECTION=true would be refused (exit 2). */}}
{{- define "registry.raftOnlyKeys" -}}
DATABASE_TYPE DATABASE_PATH ENABLE_LEADER_ELECTION LEADER_ELECTION_LEASE_DURATION LEADER_ELECTION_RENEW_DEADLINE CLUSTER_DOMAIN RAFT_FIRST_CONTACT_WAIT REGISTRY_PEERS
{{- end -}}
