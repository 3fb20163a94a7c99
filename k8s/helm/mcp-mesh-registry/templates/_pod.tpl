{{/* The pod template of the StatefulSet (Raft) and of the Deployment
(database.type=postgresql): the same pod, except that with PostgreSQL it has no Raft port,
no REGISTRY_REPLICAS, an emptyDir at /data instead of the volume claim, DATABASE_PASSWORD
from database.existingSecret, and a required Secret (AUTH_TOKEN). */}}
{{- define "registry.podTemplate" -}}
{{- $pg := eq .Values.database.type "postgresql" -}}
template:
  metadata:
    labels:
      {{- include "registry.labels" . | nindent 6 }}
      app.kubernetes.io/component: registry
    annotations:
      checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
      {{- with .Values.podAnnotations }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
  spec:
    serviceAccountName: {{ include "registry.serviceAccountName" . }}
    automountServiceAccountToken: false
    terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
    {{- with .Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      runAsNonRoot: true
      runAsUser: 10001
      runAsGroup: 10001
      fsGroup: 10001
      fsGroupChangePolicy: OnRootMismatch
      seccompProfile:
        type: RuntimeDefault
    {{- if and (gt (int .Values.replicas) 1) (ne .Values.podAntiAffinity "none") }}
    affinity:
      podAntiAffinity:
        {{- if eq .Values.podAntiAffinity "required" }}
        requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels:
                {{- include "registry.selectorLabels" . | nindent 16 }}
            topologyKey: kubernetes.io/hostname
        {{- else }}
        preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector:
                matchLabels:
                  {{- include "registry.selectorLabels" . | nindent 18 }}
              topologyKey: kubernetes.io/hostname
        {{- end }}
    {{- end }}
    {{- with .Values.nodeSelector }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .Values.tolerations }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    containers:
      - name: registry
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        args: ["serve"]
        ports:
          - name: http
            containerPort: {{ .Values.ports.http }}
          - name: metrics
            containerPort: {{ .Values.ports.metrics }}
          {{- if not $pg }}
          - name: raft
            containerPort: {{ .Values.ports.raft }}
          {{- end }}
        env:
          - name: POD_NAME
            valueFrom:
              fieldRef:
                fieldPath: metadata.name
          - name: POD_IP
            valueFrom:
              fieldRef:
                fieldPath: status.podIP
          - name: POD_NAMESPACE
            valueFrom:
              fieldRef:
                fieldPath: metadata.namespace
          - name: REGISTRY_INSTANCE_ID
            value: "$(POD_NAME)"
          {{- if $pg }}
          - name: DATABASE_PASSWORD
            valueFrom:
              secretKeyRef:
                name: {{ .Values.database.existingSecret | quote }}
                key: {{ .Values.database.passwordKey | quote }}
          {{- else }}
          - name: REGISTRY_REPLICAS
            value: {{ include "registry.initialClusterSize" . | quote }}
          {{- end }}
          {{- if ne .Values.tls.mode "off" }}
          - name: MCP_MESH_TLS_MODE
            value: {{ .Values.tls.mode | quote }}
          - name: MCP_MESH_TLS_CERT
            value: /etc/mcp-mesh/tls/tls.crt
          - name: MCP_MESH_TLS_KEY
            value: /etc/mcp-mesh/tls/tls.key
          - name: MCP_MESH_TLS_CA
            value: /etc/mcp-mesh/tls/ca.crt
          - name: MCP_MESH_TRUST_DOMAIN
            value: {{ .Values.tls.trustDomain | quote }}
          {{- if .Values.tls.adminPort }}
          - name: MCP_MESH_ADMIN_PORT
            value: {{ .Values.tls.adminPort | toString | quote }}
          {{- end }}
          {{- end }}
        envFrom:
          - configMapRef:
              name: {{ include "registry.configName" . }}
          {{- if $pg }}
          # AUTH_TOKEN; not optional, as in k8s/overlays/postgresql: without it the API
          # would take writes from anyone.
          - secretRef:
              name: {{ include "registry.secretName" . }}
          {{- else }}
          # Optional, as in k8s/base: a missing existingSecret shows as the registry's own
          # line ("ENCRYPTION_KEY is not set: ...", exit 2) in the pod's log.
          - secretRef:
              name: {{ include "registry.secretName" . }}
              optional: true
          {{- end }}
        livenessProbe:
          httpGet:
            path: /health
            port: http
            {{- if ne .Values.tls.mode "off" }}
            scheme: HTTPS  # answered without a client certificate in auto and strict
            {{- end }}
          initialDelaySeconds: {{ .Values.probes.liveness.initialDelaySeconds }}
          periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
        readinessProbe:
          httpGet:
            path: /ready
            port: http
            {{- if ne .Values.tls.mode "off" }}
            scheme: HTTPS
            {{- end }}
          initialDelaySeconds: {{ .Values.probes.readiness.initialDelaySeconds }}
          periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
        resources:
          {{- toYaml .Values.resources | nindent 10 }}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          capabilities:
            drop: ["ALL"]
        volumeMounts:
          - name: data
            mountPath: /data
          - name: tmp
            mountPath: /tmp
          {{- if ne .Values.tls.mode "off" }}
          - name: tls
            mountPath: /etc/mcp-mesh/tls
            readOnly: true
          {{- end }}
    volumes:
      {{- if $pg }}
      # Nothing is stored in /data with PostgreSQL; an emptyDir for `df -h /data` and kubectl cp.
      - name: data
        emptyDir:
          sizeLimit: {{ .Values.database.dataDirSizeLimit }}
      {{- end }}
      - name: tmp
        emptyDir:
          sizeLimit: 64Mi
      {{- if ne .Values.tls.mode "off" }}
      # A Secret volume (not subPath): cert-manager's renewals reach the files, and the
      # registry reloads them without a restart.
      - name: tls
        secret:
          secretName: {{ .Values.tls.secretName | default (printf "%s-tls" (include "registry.fullname" .)) }}
      {{- end }}
{{- end -}}
