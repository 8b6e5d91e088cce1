{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "covrag.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "covrag.fullname" -}}
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

{{- define "covrag.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name of one component: <fullname>-<component>, within 63 characters. */}}
{{- define "covrag.componentName" -}}
{{- printf "%s-%s" (include "covrag.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "covrag.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "covrag.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "covrag.secretName" -}}
{{- default (include "covrag.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Labels: call with (dict "ctx" $ "component" "api") ------------------------------------ */}}

{{- define "covrag.selectorLabels" -}}
app.kubernetes.io/name: {{ include "covrag.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "covrag.labels" -}}
helm.sh/chart: {{ include "covrag.chart" .ctx }}
{{ include "covrag.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: covrag
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Endpoints the API is pointed at -------------------------------------------------------- */}}

{{- define "covrag.qdrantUrl" -}}
{{- if include "covrag.qdrantInChart" . -}}
http://{{ include "covrag.componentName" (dict "ctx" . "component" "qdrant") }}:6333
{{- else -}}
{{ .Values.qdrant.externalUrl }}
{{- end -}}
{{- end }}

{{- define "covrag.generatorUrls" -}}
{{- if .Values.vllm.generator.enabled -}}
http://{{ include "covrag.componentName" (dict "ctx" . "component" "vllm-generator") }}:{{ .Values.vllm.generator.port }}/v1
{{- else -}}
{{ join "," .Values.vllm.external.generatorUrls }}
{{- end -}}
{{- end }}

{{- define "covrag.embedderUrl" -}}
{{- if .Values.vllm.embedder.enabled -}}
http://{{ include "covrag.componentName" (dict "ctx" . "component" "vllm-embedder") }}:{{ .Values.vllm.embedder.port }}/v1
{{- else -}}
{{ .Values.vllm.external.embedderUrl }}
{{- end -}}
{{- end }}

{{- define "covrag.criticUrl" -}}
http://{{ include "covrag.componentName" (dict "ctx" . "component" "critic-worker") }}:{{ .Values.critic.port }}
{{- end }}

{{/* The Secret holding the API keys file, or "" when no keys are configured (an open server). */}}
{{- define "covrag.apiKeysSecret" -}}
{{- if .Values.api.apiKeys.existingSecret -}}
{{ .Values.api.apiKeys.existingSecret }}
{{- else if .Values.api.apiKeys.keys -}}
{{ include "covrag.componentName" (dict "ctx" . "component" "api-keys") }}
{{- end -}}
{{- end }}

{{- define "covrag.redisHost" -}}
{{ include "covrag.componentName" (dict "ctx" . "component" "redis") }}
{{- end }}

{{/* Settings that cannot work together fail the render with a message that says why. ------ */}}

{{- define "covrag.validate" -}}
{{- $v := .Values -}}
{{- if eq $v.api.store "edge" }}
{{- if or (gt (int $v.api.replicas) 1) $v.api.autoscaling.enabled }}
{{- fail "api.store=edge keeps the vectors inside one API process: set api.replicas=1 and api.autoscaling.enabled=false, or use api.store=qdrant to scale the API out" }}
{{- end }}
{{- else }}
{{- if and (not $v.qdrant.enabled) (not $v.qdrant.externalUrl) }}
{{- fail "api.store=qdrant needs the in-chart Qdrant (qdrant.enabled=true) or qdrant.externalUrl" }}
{{- end }}
{{- end }}
{{- if and $v.qdrant.enabled (gt (int $v.qdrant.replicas) 1) (not $v.qdrant.cluster.enabled) }}
{{- fail "qdrant.replicas > 1 needs qdrant.cluster.enabled=true (separate nodes would each hold different data)" }}
{{- end }}
{{- if and $v.qdrant.enabled (gt (int $v.qdrant.collection.replicationFactor) (int $v.qdrant.replicas)) }}
{{- fail "qdrant.collection.replicationFactor cannot exceed qdrant.replicas" }}
{{- end }}
{{- if gt (int $v.qdrant.collection.writeConsistencyFactor) (int $v.qdrant.collection.replicationFactor) }}
{{- fail "qdrant.collection.writeConsistencyFactor cannot exceed qdrant.collection.replicationFactor" }}
{{- end }}
{{- range $role := list "generator" "embedder" }}
{{- $w := index $v.vllm $role }}
{{- if and $w.enabled $w.modelCache.prefetch (not $w.revision) }}
{{- fail (printf "vllm.%s.modelCache.prefetch needs vllm.%s.revision (the model's Hugging Face commit, 40 hex): weights are pinned, not whatever the hub serves today" $role $role) }}
{{- end }}
{{- end }}
{{- if and (not $v.vllm.generator.enabled) (not $v.vllm.external.generatorUrls) }}
{{- fail "the API needs a generator: vllm.generator.enabled=true or vllm.external.generatorUrls" }}
{{- end }}
{{- if and (eq $v.api.embedder "remote") (not $v.vllm.embedder.enabled) (not $v.vllm.external.embedderUrl) }}
{{- fail "api.embedder=remote needs vllm.embedder.enabled=true or vllm.external.embedderUrl (or set api.embedder=onnx)" }}
{{- end }}
{{- if $v.critic.enabled }}
{{- range $key := list "COVRAG_CRITIC" "COVRAG_CRITIC_WORKER_URL" "COVRAG_CRITIC_FALLBACK" "COVRAG_CRITIC_TIMEOUT_S" "COVRAG_CRITIC_TAU" }}
{{- if hasKey $v.api.config $key }}
{{- fail (printf "critic.enabled=true sets %s from critic.*: remove it from api.config" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.critic.reranker.enabled }}
{{- if not $v.critic.enabled }}
{{- fail "critic.reranker.enabled=true needs the critic worker: critic.enabled=true" }}
{{- end }}
{{- range $key := list "COVRAG_RERANKER_URL" "COVRAG_RERANKER_TIMEOUT_S" }}
{{- if hasKey $v.api.config $key }}
{{- fail (printf "critic.reranker.enabled=true sets %s from critic.reranker.*: remove it from api.config" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key := list "COVRAG_ANSWER_CACHE_TTL_S" "COVRAG_RATE_LIMIT_ON_ERROR" "COVRAG_JOB_LEASE_S" "COVRAG_JOB_MAX_ATTEMPTS" "COVRAG_READY_TIMEOUT_S" "COVRAG_REQUIRE_CALIBRATION" "COVRAG_READY_REQUIRES_WORKERS" "COVRAG_GENERATOR_MAX_CONCURRENCY" "COVRAG_GENERATOR_MAX_QUEUE" "COVRAG_GENERATOR_BREAKER_FAILURES" "COVRAG_GENERATOR_BREAKER_COOLDOWN_S" "COVRAG_SHUTDOWN_GRACE_S" "COVRAG_LOG_FORMAT" "COVRAG_LOG_LEVEL" }}
{{- if hasKey $v.api.config $key }}
{{- fail (printf "api.serving sets %s: remove it from api.config" $key) }}
{{- end }}
{{- end }}
{{- range $key := list "COVRAG_API_KEYS" "COVRAG_API_KEYS_FILE" }}
{{- if hasKey $v.api.config $key }}
{{- fail (printf "%s in api.config would put API keys into a ConfigMap: use api.apiKeys (a Secret mounted as a file)" $key) }}
{{- end }}
{{- end }}
{{- if and $v.api.apiKeys.existingSecret $v.api.apiKeys.keys }}
{{- fail "set api.apiKeys.existingSecret or api.apiKeys.keys, not both" }}
{{- end }}
{{- $drain := addf $v.api.preStopSleepSeconds $v.api.serving.shutdownGraceSeconds }}
{{- if le (float64 $v.api.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "api.terminationGracePeriodSeconds (%v) must exceed api.preStopSleepSeconds + api.serving.shutdownGraceSeconds (%v), or pods are killed while draining" $v.api.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- if and $v.secrets.existingSecret (not $v.redis.enabled) $v.redis.externalUrl }}
{{- fail "with secrets.existingSecret, put the external Redis URL into that Secret (key redis-url) and leave redis.externalUrl empty" }}
{{- end }}
{{- end }}

{{/* A vLLM worker's extra environment: HF token from the Secret when there is one. */}}
{{- define "covrag.hfTokenEnv" -}}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "covrag.secretName" . }}
      key: hf-token
      optional: true
{{- end }}

{{/* A worker's three probes, all GET `path` on the container port named http, timings from the
     worker's startupProbe/readinessProbe/livenessProbe values: (dict "path" "/health" "w" $w) */}}
{{- define "covrag.httpProbes" -}}
{{- range $probe := list "startupProbe" "readinessProbe" "livenessProbe" }}
{{- $p := index $.w $probe }}
{{ $probe }}:
  httpGet:
    path: {{ $.path }}
    port: http
  periodSeconds: {{ $p.periodSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
{{- end }}
{{- end }}

{{/* A PersistentVolumeClaim that survives uninstall (data, or models that are slow to refill):
     (dict "ctx" $ "component" "vllm-generator" "name" "<claim>" "spec" <size, storageClassName,
     accessModes>) */}}
{{- define "covrag.keptPvc" -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .name }}
  labels:
    {{- include "covrag.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
spec:
  accessModes:
    {{- toYaml .spec.accessModes | nindent 4 }}
  {{- with .spec.storageClassName }}
  storageClassName: {{ . | quote }}
  {{- end }}
  resources:
    requests:
      storage: {{ .spec.size | quote }}
{{- end }}

{{/* An image reference: repository@digest when a digest is given (immutable), else
     repository:tag (tag defaulting to the chart's appVersion where the caller passes it). */}}
{{- define "covrag.image" -}}
{{- if .digest -}}
{{ printf "%s@%s" .repository .digest | quote }}
{{- else -}}
{{ printf "%s:%s" .repository (toString .tag) | quote }}
{{- end -}}
{{- end }}

{{/* A vLLM Deployment's progressDeadlineSeconds: its startup probe's budget
     (periodSeconds x failureThreshold) plus 10 minutes for scheduling, the image pull and the
     prefetch init container. */}}
{{- define "covrag.vllmProgressDeadline" -}}
{{- add (mul .startupProbe.periodSeconds .startupProbe.failureThreshold) 600 -}}
{{- end }}

{{/* "true" when the chart's own Qdrant runs: enabled, and the API uses it (store=qdrant). */}}
{{- define "covrag.qdrantInChart" -}}
{{- if and .Values.qdrant.enabled (eq .Values.api.store "qdrant") }}true{{ end -}}
{{- end }}
