{{/*
Chart name.
*/}}
{{- define "elevate-sink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name if it already contains the chart name.
*/}}
{{- define "elevate-sink.fullname" -}}
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

{{- define "elevate-sink.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "elevate-sink.labels" -}}
helm.sh/chart: {{ include "elevate-sink.chart" . }}
{{ include "elevate-sink.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "elevate-sink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "elevate-sink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "elevate-sink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "elevate-sink.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "elevate-sink.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the config file and the secret files are mounted. */}}
{{- define "elevate-sink.configDir" -}}/etc/elevate-sink{{- end }}
{{- define "elevate-sink.configPath" -}}/etc/elevate-sink/config.toml{{- end }}
{{- define "elevate-sink.secretDir" -}}/var/run/secrets/elevate-sink{{- end }}

{{/*
Checks on values that the schema cannot express. Included by every template that renders a
workload, so `helm template` fails with a message that names the values to change.
*/}}
{{- define "elevate-sink.validate" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $drain := int .Values.drainDeadlineSeconds }}
{{- if ge $drain $grace }}
{{- fail (printf "drainDeadlineSeconds (%d) must be smaller than terminationGracePeriodSeconds (%d): the service drains in-flight requests for drainDeadlineSeconds after SIGTERM and still has to commit offsets and leave the consumer group before Kubernetes sends SIGKILL" $drain $grace) }}
{{- end }}
{{- $cfg := .Values.config | default dict }}
{{- $shutdown := $cfg.shutdown | default dict }}
{{- if or (hasKey $shutdown "drain_deadline") (hasKey $shutdown "grace_period") }}
{{- fail "config.shutdown.drain_deadline and config.shutdown.grace_period are owned by the chart: set drainDeadlineSeconds and terminationGracePeriodSeconds instead" }}
{{- end }}
{{- if hasKey ($cfg.admin | default dict) "listen" }}
{{- fail "config.admin.listen is owned by the chart: set metrics.port instead" }}
{{- end }}
{{- $kafka := $cfg.kafka | default dict }}
{{- range $k, $v := ($kafka.properties | default dict) }}
{{- if regexMatch "(password|secret|\\.pem$|\\.key$|client\\.secret|sasl\\.jaas\\.config|sasl\\.oauthbearer\\.config)" $k }}
{{- fail (printf "config.kafka.properties.%s looks secret: it would end up in a ConfigMap. Put it in existingSecret and reference the file from config.kafka.secret_properties instead" $k) }}
{{- end }}
{{- end }}
{{- $rate := $cfg.rate | default dict }}
{{- range $k, $v := ($rate.markets | default dict) }}
{{- if has $k (list "true" "false") }}
{{- fail (printf "config.rate.markets has a key %q: YAML reads unquoted NO, YES, ON, OFF as booleans. Quote the market code, e.g. \"NO\": 10" $k) }}
{{- end }}
{{- end }}
{{- range $k, $v := ($kafka.secret_properties | default dict) }}
{{- include "elevate-sink.validateSecretSource" (dict "root" $ "name" (printf "config.kafka.secret_properties.%s" $k) "source" $v) }}
{{- end }}
{{- $registry := $cfg.registry | default dict }}
{{- range $k := list "password" "token" }}
{{- with (get $registry $k) }}
{{- include "elevate-sink.validateSecretSource" (dict "root" $ "name" (printf "config.registry.%s" $k) "source" .) }}
{{- end }}
{{- end }}
{{- $elevate := $cfg.elevate | default dict }}
{{- $apiKey := $elevate.payment_api_key }}
{{- if $apiKey }}
{{- include "elevate-sink.validateSecretSource" (dict "root" $ "name" "config.elevate.payment_api_key" "source" $apiKey) }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if eq (upper (.name | default "")) "ELEVATE_SINK__ELEVATE__PAYMENT_API_KEY" }}{{ $apiKey = "from extraEnv" }}{{ end }}
{{- end }}
{{- include "elevate-sink.validateRoutes" (dict "cfg" $cfg "apiKey" $apiKey) }}
{{- if .Values.keda.enabled }}
{{- $parts := int .Values.keda.partitionCount }}
{{- $max := int .Values.keda.maxReplicaCount }}
{{- if lt $parts 1 }}
{{- fail "keda.partitionCount must be set to the topic's partition count when keda.enabled is true: it caps keda.maxReplicaCount" }}
{{- end }}
{{- if gt $max $parts }}
{{- fail (printf "keda.maxReplicaCount (%d) must not exceed keda.partitionCount (%d): a consumer group gives each partition to one member only, so replicas beyond the partition count sit idle" $max $parts) }}
{{- end }}
{{- if gt (int .Values.keda.minReplicaCount) $max }}
{{- fail (printf "keda.minReplicaCount (%d) must not exceed keda.maxReplicaCount (%d)" (int .Values.keda.minReplicaCount) $max) }}
{{- end }}
{{- end }}
{{- if .Values.replay.enabled }}
{{- if not .Values.replay.topic }}{{ fail "replay.topic is required when replay.enabled is true" }}{{ end }}
{{- if not .Values.replay.from }}{{ fail "replay.from is required when replay.enabled is true (an offset, an RFC 3339 timestamp, earliest or now)" }}{{ end }}
{{- if not .Values.replay.to }}{{ fail "replay.to is required when replay.enabled is true (an offset, an RFC 3339 timestamp, earliest or now)" }}{{ end }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.kafka.cidrs) (not .Values.networkPolicy.kafka.peers) }}
{{- fail "networkPolicy.enabled needs networkPolicy.kafka.cidrs or networkPolicy.kafka.peers: without them the pods cannot reach Kafka" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled" }}
{{- end }}
{{- end }}

{{/*
A secret reference (.source, named .name in messages): {file: PATH} or {env: VAR}, never a value.
A file under the secret dir must be a mounted key of existingSecret.
*/}}
{{- define "elevate-sink.validateSecretSource" -}}
{{- $secretDir := include "elevate-sink.secretDir" .root }}
{{- if not (kindIs "map" .source) }}
{{- fail (printf "%s must be {file: PATH} or {env: VAR}, not a value: secret values never go in values" .name) }}
{{- end }}
{{- $file := .source.file | default "" }}
{{- if hasPrefix (printf "%s/" $secretDir) $file }}
{{- if not .root.Values.existingSecret }}
{{- fail (printf "%s reads %s, but existingSecret is not set" .name $file) }}
{{- end }}
{{- $key := trimPrefix (printf "%s/" $secretDir) $file }}
{{- if and .root.Values.existingSecretKeys (not (has $key .root.Values.existingSecretKeys)) }}
{{- fail (printf "%s reads %s, but %q is not in existingSecretKeys" .name $file $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
config.routes (.cfg the config, .apiKey elevate.payment_api_key or its extraEnv override
ELEVATE_SINK__ELEVATE__PAYMENT_API_KEY): what the service refuses at
start and the schema cannot say. Unique names, topics of kafka.topics, every topic feeding a
route, and a payment route only with a payment_api_key.
*/}}
{{- define "elevate-sink.validateRoutes" -}}
{{- $routes := .cfg.routes | default list }}
{{- $topics := (.cfg.kafka | default dict).topics | default list }}
{{- $names := list }}
{{- $fed := list }}
{{- range $i, $r := $routes }}
{{- if has $r.name $names }}
{{- fail (printf "config.routes[%d].name %q is used by another route: route names must be unique" $i $r.name) }}
{{- end }}
{{- $names = append $names $r.name }}
{{- range ($r.topics | default list) }}
{{- if not (has . $topics) }}
{{- fail (printf "config.routes[%d].topics has %q, which is not one of config.kafka.topics" $i .) }}
{{- end }}
{{- end }}
{{- $fed = concat $fed ($r.topics | default $topics) }}
{{- if and (eq $r.kind "payment") (not $.apiKey) }}
{{- fail (printf "config.routes[%d] (%s) is a payment route: it needs config.elevate.payment_api_key, a {file: ...} key of existingSecret or an {env: ...} variable (the service refuses the config without it)" $i $r.name) }}
{{- end }}
{{- end }}
{{- if $routes }}
{{- range $topics }}
{{- if not (has . $fed) }}
{{- fail (printf "config.kafka.topics has %q, which feeds no route of config.routes: give it a route (or a route without topics)" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Copy .in into .out without empty strings, lists and maps, recursively (into the maps of a list
too: config.routes). Works on dicts in place (no JSON round trip) so integers stay integers in toToml.
*/}}
{{- define "elevate-sink.prune" -}}
{{- $out := .out }}
{{- range $k, $v := .in }}
{{- if kindIs "map" $v }}
{{- $sub := dict }}
{{- include "elevate-sink.prune" (dict "in" $v "out" $sub) }}
{{- if $sub }}{{- $_ := set $out $k $sub }}{{- end }}
{{- else if kindIs "slice" $v }}
{{- $items := list }}
{{- range $v }}
{{- if kindIs "map" . }}
{{- $sub := dict }}
{{- include "elevate-sink.prune" (dict "in" . "out" $sub) }}
{{- $items = append $items $sub }}
{{- else }}
{{- $items = append $items . }}
{{- end }}
{{- end }}
{{- if $items }}{{- $_ := set $out $k $items }}{{- end }}
{{- else if kindIs "string" $v }}
{{- if ne $v "" }}{{- $_ := set $out $k $v }}{{- end }}
{{- else if kindIs "float64" $v }}
{{- /* Helm reads YAML numbers as float64; toToml would print 32 as 32.0, which an integer field rejects. */}}
{{- if eq $v (float64 (int64 $v)) }}{{- $_ := set $out $k (int64 $v) }}{{- else }}{{- $_ := set $out $k $v }}{{- end }}
{{- else if not (kindIs "invalid" $v) }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The service's config file: .Values.config without empty values, plus the keys the chart owns.
*/}}
{{- define "elevate-sink.configToml" -}}
{{- $cfg := dict }}
{{- include "elevate-sink.prune" (dict "in" (.Values.config | default dict) "out" $cfg) }}
{{- $shutdown := get $cfg "shutdown" | default dict }}
{{- $_ := set $shutdown "drain_deadline" (printf "%ds" (int .Values.drainDeadlineSeconds)) }}
{{- $_ := set $shutdown "grace_period" (printf "%ds" (int .Values.terminationGracePeriodSeconds)) }}
{{- $_ := set $cfg "shutdown" $shutdown }}
{{- $admin := get $cfg "admin" | default dict }}
{{- $_ := set $admin "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port)) }}
{{- $_ := set $cfg "admin" $admin }}
{{- toToml $cfg }}
{{- end }}

{{/*
Pod-level pieces shared by the Deployment and the replay Job.
*/}}
{{- define "elevate-sink.volumes" -}}
- name: config
  configMap:
    name: {{ include "elevate-sink.fullname" . }}
{{- if .Values.existingSecret }}
- name: secrets
  secret:
    secretName: {{ .Values.existingSecret }}
    defaultMode: 0440
    {{- with .Values.existingSecretKeys }}
    items:
      {{- range . }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
    {{- end }}
{{- end }}
{{- if .Values.tmpVolume.enabled }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "elevate-sink.volumeMounts" -}}
- name: config
  mountPath: {{ include "elevate-sink.configDir" . }}
  readOnly: true
{{- if .Values.existingSecret }}
- name: secrets
  mountPath: {{ include "elevate-sink.secretDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.tmpVolume.enabled }}
- name: tmp
  mountPath: /tmp
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "elevate-sink.podCommon" -}}
serviceAccountName: {{ include "elevate-sink.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
