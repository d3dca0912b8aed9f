{{/* Names ------------------------------------------------------------------------------------------------------ */}}

{{- define "model-engine.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The object-name prefix; truncated so that "<fullname>-<longest suffix>" stays within 63 characters. */}}
{{- define "model-engine.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "model-engine.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels --------------------------------------------------------------------------------------------------- */}}

{{- define "model-engine.selectorLabels" -}}
app.kubernetes.io/name: {{ include "model-engine.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "model-engine.labels" -}}
helm.sh/chart: {{ include "model-engine.chart" . }}
{{ include "model-engine.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-engine
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "model-engine.componentLabels" -}}
{{ include "model-engine.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "model-engine.componentSelectorLabels" -}}
{{ include "model-engine.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Service accounts ------------------------------------------------------------------------------------------ */}}

{{- define "model-engine.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "model-engine.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "model-engine.endpointServiceAccountName" -}}
{{- default (printf "%s-endpoint" (include "model-engine.fullname" .)) .Values.endpoints.serviceAccount.name }}
{{- end }}

{{/* Images ---------------------------------------------------------------------------------------------------- */}}

{{- define "model-engine.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "model-engine.builtinImageTag" -}}
{{- default .Chart.AppVersion .Values.inferenceImages.builtin.tag }}
{{- end }}

{{/* Secrets: where each connection string and the bootstrap key come from -------------------------------------- */}}

{{- define "model-engine.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "model-engine.fullname" .) }}
{{- end }}

{{- define "model-engine.redis.fullname" -}}
{{- printf "%s-redis" (include "model-engine.fullname" .) }}
{{- end }}

{{- define "model-engine.databaseSecretName" -}}
{{- if .Values.postgresql.enabled }}
{{- include "model-engine.postgresql.fullname" . }}
{{- else }}
{{- required "externalDatabase.existingSecret is required when postgresql.enabled is false" .Values.externalDatabase.existingSecret }}
{{- end }}
{{- end }}

{{- define "model-engine.databaseSecretKey" -}}
{{- if .Values.postgresql.enabled }}database-url{{ else }}{{ .Values.externalDatabase.secretKey }}{{ end }}
{{- end }}

{{- define "model-engine.redisSecretName" -}}
{{- if .Values.redis.enabled }}
{{- include "model-engine.redis.fullname" . }}
{{- else }}
{{- required "externalRedis.existingSecret is required when redis.enabled is false" .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{- define "model-engine.bootstrapKeySecretName" -}}
{{- if .Values.auth.bootstrapKey.existingSecret }}
{{- .Values.auth.bootstrapKey.existingSecret }}
{{- else if .Values.auth.bootstrapKey.generate }}
{{- printf "%s-bootstrap-key" (include "model-engine.fullname" .) }}
{{- end }}
{{- end }}

{{- define "model-engine.bootstrapKeySecretKey" -}}
{{- if .Values.auth.bootstrapKey.existingSecret }}{{ .Values.auth.bootstrapKey.secretKey }}{{ else }}api-key{{ end }}
{{- end }}

{{/*
A random secret value that survives upgrades: reuse what the named Secret already holds in the cluster.
Call with (dict "root" $ "name" SECRET "key" KEY "length" N). `helm template` has no cluster, so it always generates.
*/}}
{{- define "model-engine.stableRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if and $existing (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}

{{/* The control plane's configuration ------------------------------------------------------------------------- */}}

{{/*
Environment of every control-plane container; call with (dict "root" $ "migrations" false). Each value maps to
exactly one LLM_ENGINE_* setting of model_engine_server/config.py; connection strings and keys come from Secrets,
never from plain values.
*/}}
{{- define "model-engine.env" -}}
{{- $migrations := .migrations }}
{{- with .root -}}
- name: LLM_ENGINE_ORCHESTRATOR
  value: kubernetes
- name: LLM_ENGINE_DATA_DIR
  value: /var/lib/llm-engine
- name: LLM_ENGINE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "model-engine.databaseSecretName" . }}
      key: {{ include "model-engine.databaseSecretKey" . }}
{{- /* The migration hook runs before this release's own Secrets exist, and needs neither broker nor key. */}}
{{- if not $migrations }}
- name: LLM_ENGINE_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "model-engine.redisSecretName" . }}
      key: {{ if .Values.redis.enabled }}broker-url{{ else }}{{ .Values.externalRedis.brokerUrlKey }}{{ end }}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.resultBackendUrlKey }}
- name: LLM_ENGINE_RESULT_BACKEND_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "model-engine.redisSecretName" . }}
      key: {{ .Values.externalRedis.resultBackendUrlKey }}
{{- end }}
- name: LLM_ENGINE_AUTH_MODE
  value: {{ .Values.auth.mode | quote }}
- name: LLM_ENGINE_BOOTSTRAP_OWNER
  value: {{ .Values.auth.bootstrapOwner | quote }}
{{- with include "model-engine.bootstrapKeySecretName" . }}
- name: LLM_ENGINE_BOOTSTRAP_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ include "model-engine.bootstrapKeySecretKey" $.root }}
{{- end }}
{{- end }}
- name: LLM_ENGINE_UPSTREAM_CONNECT_TIMEOUT_SECONDS
  value: {{ .Values.gateway.upstreamConnectTimeoutSeconds | quote }}
- name: LLM_ENGINE_UPSTREAM_READ_TIMEOUT_SECONDS
  value: {{ .Values.gateway.upstreamReadTimeoutSeconds | quote }}
- name: LLM_ENGINE_ROUTING_POLICY
  value: {{ .Values.gateway.routing.policy | quote }}
- name: LLM_ENGINE_ROUTING_MAX_IMBALANCE
  value: {{ .Values.gateway.routing.maxImbalance | int64 | quote }}
- name: LLM_ENGINE_ROUTING_PREFIX_BLOCK_CHARS
  value: {{ .Values.gateway.routing.prefixBlockChars | int64 | quote }}
- name: LLM_ENGINE_ROUTING_PREFIX_INDEX_BLOCKS
  value: {{ .Values.gateway.routing.prefixIndexBlocks | int64 | quote }}
- name: LLM_ENGINE_ROUTING_FAILURE_COOLDOWN_SECONDS
  value: {{ .Values.gateway.routing.failureCooldownSeconds | quote }}
- name: LLM_ENGINE_STREAM_KEEPALIVE_SECONDS
  value: {{ .Values.gateway.streamKeepaliveSeconds | quote }}
- name: LLM_ENGINE_MAX_REQUEST_BODY_BYTES
  value: {{ .Values.gateway.maxRequestBodyBytes | int64 | quote }}
- name: LLM_ENGINE_REQUEST_BODY_TIMEOUT_SECONDS
  value: {{ .Values.gateway.requestBodyTimeoutSeconds | quote }}
- name: LLM_ENGINE_MAX_REQUEST_HEADER_BYTES
  value: {{ .Values.gateway.maxRequestHeaderBytes | int64 | quote }}
- name: LLM_ENGINE_MAX_QUERY_STRING_BYTES
  value: {{ .Values.gateway.maxQueryStringBytes | int64 | quote }}
- name: LLM_ENGINE_ASYNC_TASK_RESULT_TTL_SECONDS
  value: {{ .Values.asyncTasks.resultTtlSeconds | int64 | quote }}
- name: LLM_ENGINE_ASYNC_TASK_VISIBILITY_TIMEOUT_SECONDS
  value: {{ .Values.asyncTasks.visibilityTimeoutSeconds | int64 | quote }}
- name: LLM_ENGINE_ASYNC_TASK_MAX_ATTEMPTS
  value: {{ .Values.asyncTasks.maxAttempts | int64 | quote }}
- name: LLM_ENGINE_BROKER_KEY_PREFIX
  value: {{ .Values.asyncTasks.brokerKeyPrefix | quote }}
- name: LLM_ENGINE_TENANT_REQUESTS_PER_MINUTE
  value: {{ .Values.tenants.requestsPerMinute | int64 | quote }}
- name: LLM_ENGINE_TENANT_TOKENS_PER_MINUTE
  value: {{ .Values.tenants.tokensPerMinute | int64 | quote }}
- name: LLM_ENGINE_TENANT_MAX_CONCURRENT_REQUESTS
  value: {{ .Values.tenants.maxConcurrentRequests | int64 | quote }}
- name: LLM_ENGINE_TENANT_MAX_ENDPOINTS
  value: {{ .Values.tenants.maxEndpoints | int64 | quote }}
- name: LLM_ENGINE_TENANT_MAX_JOBS
  value: {{ .Values.tenants.maxJobs | int64 | quote }}
- name: LLM_ENGINE_API_KEY_CACHE_SECONDS
  value: {{ .Values.tenants.apiKeyCacheSeconds | quote }}
- name: LLM_ENGINE_FAIR_QUEUEING
  value: {{ .Values.tenants.fairQueueing | quote }}
- name: LLM_ENGINE_FAIR_QUEUE_OVERCOMMIT
  value: {{ .Values.tenants.fairQueueOvercommit | quote }}
- name: LLM_ENGINE_USAGE_FLUSH_SECONDS
  value: {{ .Values.tenants.usageFlushSeconds | quote }}
- name: LLM_ENGINE_ASYNC_WORKER_CONCURRENCY
  value: {{ .Values.worker.concurrency | int64 | quote }}
- name: LLM_ENGINE_ASYNC_ENDPOINT_CONCURRENCY
  value: {{ .Values.worker.endpointConcurrency | int64 | quote }}
- name: LLM_ENGINE_OBJECT_STORE_URL
  value: {{ .Values.objectStorage.url | quote }}
- name: LLM_ENGINE_S3_ENDPOINT_URL
  value: {{ .Values.objectStorage.s3EndpointUrl | quote }}
- name: LLM_ENGINE_S3_REGION
  value: {{ .Values.objectStorage.s3Region | quote }}
- name: LLM_ENGINE_FILE_MAX_BYTES
  value: {{ .Values.objectStorage.fileMaxBytes | int64 | quote }}
- name: LLM_ENGINE_BATCH_CHUNK_SIZE
  value: {{ .Values.jobs.batchChunkSize | int64 | quote }}
- name: LLM_ENGINE_BATCH_MAX_IN_FLIGHT_PROMPTS
  value: {{ .Values.jobs.maxInFlightPrompts | int64 | quote }}
- name: LLM_ENGINE_JOB_MAX_RESTARTS
  value: {{ .Values.jobs.maxRestarts | int64 | quote }}
- name: LLM_ENGINE_JOB_TTL_SECONDS_AFTER_FINISHED
  value: {{ .Values.jobs.ttlSecondsAfterFinished | int64 | quote }}
- name: LLM_ENGINE_FINE_TUNE_MAX_CONCURRENT_PER_TENANT
  value: {{ .Values.jobs.fineTuneMaxConcurrentPerTenant | int64 | quote }}
- name: LLM_ENGINE_FINE_TUNE_MAX_RUNTIME_SECONDS
  value: {{ .Values.jobs.fineTuneMaxRuntimeSeconds | int64 | quote }}
- name: LLM_ENGINE_RECONCILE_INTERVAL_SECONDS
  value: {{ .Values.orchestrator.reconcileIntervalSeconds | quote }}
- name: LLM_ENGINE_SCALE_TO_ZERO_IDLE_SECONDS
  value: {{ .Values.endpoints.scaleToZero.idleSeconds | quote }}
- name: LLM_ENGINE_COLD_START_TIMEOUT_SECONDS
  value: {{ .Values.endpoints.scaleToZero.coldStartTimeoutSeconds | quote }}
- name: LLM_ENGINE_KUBERNETES_NAMESPACE
  value: {{ .Values.endpoints.namespace | quote }}
- name: LLM_ENGINE_KUBERNETES_FIELD_MANAGER
  value: {{ .Values.endpoints.fieldManager | quote }}
- name: LLM_ENGINE_KUBERNETES_ENDPOINT_SERVICE_ACCOUNT
  value: {{ include "model-engine.endpointServiceAccountName" . | quote }}
- name: LLM_ENGINE_KUBERNETES_GPU_NODE_LABEL
  value: {{ .Values.endpoints.gpuNodeLabel | quote }}
- name: LLM_ENGINE_KUBERNETES_GPU_TOLERATIONS
  value: {{ join "," .Values.endpoints.gpuTolerations | quote }}
- name: LLM_ENGINE_KUBERNETES_KEDA_ENABLED
  value: {{ .Values.endpoints.keda.enabled | quote }}
- name: LLM_ENGINE_KUBERNETES_HF_TOKEN_SECRET
  value: {{ .Values.endpoints.hfTokenSecret | quote }}
- name: LLM_ENGINE_KUBERNETES_SERVICE_URL_TEMPLATE
  value: {{ .Values.endpoints.serviceUrlTemplate | quote }}
- name: LLM_ENGINE_KUBERNETES_POD_ROUTING
  value: {{ .Values.endpoints.podRouting | quote }}
- name: LLM_ENGINE_KUBERNETES_KEDA_PROMETHEUS_URL
  value: {{ .Values.endpoints.keda.prometheusUrl | quote }}
- name: LLM_ENGINE_KUBERNETES_KEDA_QUERY_TEMPLATE
  value: {{ .Values.endpoints.keda.queryTemplate | quote }}
- name: LLM_ENGINE_KUBERNETES_HPA_METRIC_NAME
  value: {{ .Values.endpoints.autoscaling.metricName | quote }}
- name: LLM_ENGINE_KUBERNETES_BUILTIN_ENGINE_WITHOUT_GPUS
  value: {{ .Values.endpoints.builtinEngineWithoutGpus | quote }}
- name: LLM_ENGINE_PREFIX_CACHE_MB
  value: {{ .Values.endpoints.builtinPrefixCacheMb | int64 | quote }}
- name: LLM_ENGINE_KUBERNETES_TERMINATION_GRACE_SECONDS
  value: {{ .Values.endpoints.terminationGracePeriodSeconds | int64 | quote }}
- name: LLM_ENGINE_KUBERNETES_S3_DOWNLOAD_IMAGE
  value: {{ .Values.endpoints.checkpoints.s3DownloadImage | quote }}
- name: LLM_ENGINE_KUBERNETES_GCS_DOWNLOAD_IMAGE
  value: {{ .Values.endpoints.checkpoints.gcsDownloadImage | quote }}
- name: LLM_ENGINE_KUBERNETES_CHECKPOINT_CREDENTIALS_SECRET
  value: {{ .Values.endpoints.checkpoints.credentialsSecret | quote }}
- name: LLM_ENGINE_KUBERNETES_WATCH_TIMEOUT_SECONDS
  value: {{ .Values.orchestrator.watchTimeoutSeconds | int64 | quote }}
- name: LLM_ENGINE_KUBERNETES_LEADER_LEASE_NAME
  value: {{ default (printf "%s-orchestrator" (include "model-engine.fullname" .)) .Values.orchestrator.leaseName | quote }}
- name: LLM_ENGINE_TGI_IMAGE_REPOSITORY
  value: {{ .Values.inferenceImages.tgi.repository | quote }}
- name: LLM_ENGINE_VLLM_IMAGE_REPOSITORY
  value: {{ .Values.inferenceImages.vllm.repository | quote }}
- name: LLM_ENGINE_BUILTIN_IMAGE_REPOSITORY
  value: {{ .Values.inferenceImages.builtin.repository | quote }}
- name: LLM_ENGINE_BUILTIN_IMAGE_TAG
  value: {{ include "model-engine.builtinImageTag" . | quote }}
- name: LLM_ENGINE_LATEST_IMAGE_TAGS
  value: {{ .Values.inferenceImages.latestTags | toJson | quote }}
- name: LLM_ENGINE_MODEL_ZOO_OVERRIDES
  value: {{ .Values.modelZoo | toJson | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "model-engine.envFrom" -}}
{{- with .Values.extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Writable scratch space for containers with a read-only root filesystem. */}}
{{- define "model-engine.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/llm-engine
{{- end }}

{{- define "model-engine.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- end }}

{{- define "model-engine.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Common pod-spec scheduling fields of one component; call with (dict "root" $ "values" .Values.gateway). */}}
{{- define "model-engine.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
