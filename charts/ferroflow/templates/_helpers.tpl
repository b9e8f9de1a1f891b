{{/* Names, labels and the store settings every template shares. */}}

{{- define "ferroflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ferroflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferroflow.operatorName" -}}
{{- printf "%s-operator" (include "ferroflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ferroflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ferroflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ferroflow.serverSelector" -}}
app.kubernetes.io/name: {{ include "ferroflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "ferroflow.operatorSelector" -}}
app.kubernetes.io/name: {{ include "ferroflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ferroflow.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "ferroflow.serverServiceAccount" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferroflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferroflow.operatorServiceAccount" -}}
{{- default (include "ferroflow.operatorName" .) .Values.operator.serviceAccount.name }}
{{- end }}

{{/* SQLite trial mode: no external database configured. */}}
{{- define "ferroflow.sqlite" -}}
{{- if not (or .Values.mlflow.backendStoreUri .Values.mlflow.backendStoreUriFrom.name) }}true{{ end }}
{{- end }}

{{- define "ferroflow.artifactsDestination" -}}
{{- if .Values.mlflow.artifactsDestination }}
{{- .Values.mlflow.artifactsDestination }}
{{- else if include "ferroflow.sqlite" . }}
{{- "/data/artifacts" }}
{{- else }}
{{- fail "mlflow.artifactsDestination is required with an external database: a bucket URL (s3://bucket/prefix, gs://…, az://…) that every replica shares" }}
{{- end }}
{{- end }}

{{/* The refusals: settings that would lose data or cannot work. */}}
{{- define "ferroflow.validate" -}}
{{- if and (include "ferroflow.sqlite" .) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount is %d but the store is SQLite (no mlflow.backendStoreUri or mlflow.backendStoreUriFrom): SQLite is one file on one volume and supports one replica. Set replicaCount=1 for a trial, or point mlflow.backendStoreUriFrom at a Secret with a postgresql:// URI to run several replicas." (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.mlflow.backendStoreUri .Values.mlflow.backendStoreUriFrom.name }}
{{- fail "set one of mlflow.backendStoreUri and mlflow.backendStoreUriFrom, not both" }}
{{- end }}
{{- if and .Values.mlflow.backendStoreUriFrom.name (not .Values.mlflow.backendStoreUriFrom.key) }}
{{- fail "mlflow.backendStoreUriFrom needs a key: {name: <secret>, key: <key holding the URI>}" }}
{{- end }}
{{- end }}

{{/* The store settings of every ferroflow container. */}}
{{- define "ferroflow.storeEnv" -}}
- name: MLFLOW_BACKEND_STORE_URI
{{- if .Values.mlflow.backendStoreUriFrom.name }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.mlflow.backendStoreUriFrom.name }}
      key: {{ .Values.mlflow.backendStoreUriFrom.key }}
{{- else if .Values.mlflow.backendStoreUri }}
  value: {{ .Values.mlflow.backendStoreUri | quote }}
{{- else }}
  value: "sqlite:////data/mlflow.db"
{{- end }}
- name: MLFLOW_DEFAULT_ARTIFACT_ROOT
  value: {{ .Values.mlflow.defaultArtifactRoot | quote }}
- name: FERROFLOW_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The operator container: its own Deployment on an external database, beside the server on SQLite. */}}
{{- define "ferroflow.operatorContainer" -}}
- name: operator
  image: {{ include "ferroflow.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["operator"]
  env:
    {{- include "ferroflow.storeEnv" . | nindent 4 }}
    - name: FERROFLOW_METRICS_ADDRESS
      value: "0.0.0.0:{{ .Values.operator.metricsPort }}"
    - name: FERROFLOW_LEASE_NAME
      value: {{ default (include "ferroflow.operatorName" .) .Values.operator.leaseName | quote }}
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: FERROFLOW_TRACKING_URL
      value: {{ default (printf "http://%s.%s.svc:%d" (include "ferroflow.fullname" .) .Release.Namespace (int .Values.service.port)) .Values.operator.trackingUrl | quote }}
    # A ProjectRun's Pod copies the ferroflow binary from the operator's own image.
    - name: FERROFLOW_IMAGE
      value: {{ include "ferroflow.image" . | quote }}
    {{- with .Values.operator.servingImage }}
    - name: FERROFLOW_SERVING_IMAGE
      value: {{ . | quote }}
    {{- end }}
    {{- with .Values.operator.resyncPeriod }}
    - name: FERROFLOW_RESYNC_PERIOD
      value: {{ . | quote }}
    {{- end }}
    {{- with .Values.operator.stalledResyncPeriod }}
    - name: FERROFLOW_STALLED_RESYNC_PERIOD
      value: {{ . | quote }}
    {{- end }}
    {{- with .Values.operator.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: metrics
      containerPort: {{ .Values.operator.metricsPort }}
  livenessProbe:
    httpGet: {path: /healthz, port: metrics}
    periodSeconds: 10
  readinessProbe:
    httpGet: {path: /readyz, port: metrics}
    periodSeconds: 5
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.operator.resources | nindent 4 }}
{{- end }}

{{/* `auth.mode`, checked: none or kubernetes. */}}
{{- define "ferroflow.authMode" -}}
{{- $mode := .Values.auth.mode | default "none" -}}
{{- if not (has $mode (list "none" "kubernetes")) -}}
{{- fail (printf "auth.mode must be none or kubernetes, not %q" $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end }}
