{{/* Names and labels. */}}
{{- define "imagegen.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imagegen.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := .Values.nameOverride | default .Chart.Name -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "imagegen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Values.nameOverride | default .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* selectorLabels takes (dict "root" $ "component" "server"). */}}
{{- define "imagegen.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Values.nameOverride | default .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "imagegen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "imagegen.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "imagegen.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* secretName takes (dict "root" $ "ref" ITEM): the Secret holding a value, the user's or the chart's. */}}
{{- define "imagegen.secretName" -}}
{{- .ref.existingSecret | default (include "imagegen.fullname" .root) -}}
{{- end -}}

{{/* isSet: "true" when a secret item has a value or names an existing Secret. */}}
{{- define "imagegen.isSet" -}}
{{- if or .value .existingSecret }}true{{ end -}}
{{- end -}}

{{/*
durationSeconds: a Go duration string (10m, 1h30m, 90s) in whole seconds, rounded up.
The worker's grace period is computed from config.build.cleanupTimeout with it.
*/}}
{{- define "imagegen.durationSeconds" -}}
{{- $s := toString . -}}
{{- if not (regexMatch "^([0-9]+(\\.[0-9]+)?(h|m|s|ms|us|ns))+$" $s) -}}
{{- fail (printf "%q is not a Go duration (e.g. 10m, 1h30m, 90s)" $s) -}}
{{- end -}}
{{- $units := dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "ns" 0.000000001 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(h|ms|us|ns|m|s)" $s -1 -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . -}}
{{- $total = addf $total (mulf (float64 $num) (get $units (trimPrefix $num .))) -}}
{{- end -}}
{{- ceil $total | int -}}
{{- end -}}

{{- define "imagegen.workerGracePeriod" -}}
{{- /* A worker told to stop lets builds run on for shutdownGrace, then waits
   cleanupTimeout + 10s for the canceled ones to clean up before it exits. */ -}}
{{- $cleanup := add (include "imagegen.durationSeconds" .Values.config.build.cleanupTimeout | int) (include "imagegen.durationSeconds" (.Values.config.build.shutdownGrace | default "0s") | int) -}}
{{- $grace := .Values.worker.terminationGracePeriodSeconds | int -}}
{{- if eq $grace 0 -}}
{{- $grace = add $cleanup 60 -}}
{{- end -}}
{{- if lt $grace (add $cleanup 10 | int) -}}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must be at least config.build.shutdownGrace + config.build.cleanupTimeout + 10s (%d): a worker killed earlier leaves VMs behind" $grace (add $cleanup 10)) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}

{{- define "imagegen.redisHost" -}}
{{- printf "%s-redis" (include "imagegen.fullname" .) -}}
{{- end -}}

{{- define "imagegen.baseURL" -}}
{{- if .Values.config.baseURL -}}
{{- .Values.config.baseURL -}}
{{- else if .Values.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "imagegen.fullname" .) .Release.Namespace (.Values.server.service.port | int) -}}
{{- end -}}
{{- end -}}

{{/* Where the secrets are mounted in server and worker pods. */}}
{{- define "imagegen.secretsDir" -}}/etc/imagegen/secrets{{- end -}}
{{- define "imagegen.configFile" -}}/etc/imagegen/config/imagegen.yaml{{- end -}}

{{/* env: the environment server and workers share. */}}
{{- define "imagegen.env" -}}
{{- $root := . -}}
{{- $s := .Values.secrets -}}
- name: IMAGEGEN_ENCRYPTION_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "imagegen.secretName" (dict "root" $root "ref" $s.encryptionKey) }}, key: {{ $s.encryptionKey.key }}}
{{- if $s.apiTokens.existingSecret }}
{{- range $i, $k := $s.apiTokens.keys }}
- name: IMAGEGEN_API_TOKEN_{{ $i }}
  valueFrom:
    secretKeyRef: {name: {{ $s.apiTokens.existingSecret }}, key: {{ $k }}}
{{- end }}
{{- else }}
{{- range $i, $v := $s.apiTokens.values }}
- name: IMAGEGEN_API_TOKEN_{{ $i }}
  valueFrom:
    secretKeyRef: {name: {{ include "imagegen.fullname" $root }}, key: api-token-{{ $i }}}
{{- end }}
{{- end }}
{{- $r := .Values.redis }}
{{- if and (eq $r.mode "bundled") $r.bundled.auth.enabled }}
- name: IMAGEGEN_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "imagegen.secretName" (dict "root" $root "ref" $r.bundled.auth.password) }}, key: {{ $r.bundled.auth.password.key }}}
{{- end }}
{{- if eq $r.mode "standalone" }}
- name: IMAGEGEN_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ include "imagegen.secretName" (dict "root" $root "ref" $r.url) }}, key: {{ $r.url.key }}}
{{- end }}
{{- if and (has $r.mode (list "sentinel" "cluster")) (include "imagegen.isSet" $r.password) }}
- name: IMAGEGEN_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "imagegen.secretName" (dict "root" $root "ref" $r.password) }}, key: {{ $r.password.key }}}
{{- end }}
{{- if and (eq $r.mode "sentinel") (include "imagegen.isSet" $r.sentinel.password) }}
- name: IMAGEGEN_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "imagegen.secretName" (dict "root" $root "ref" $r.sentinel.password) }}, key: {{ $r.sentinel.password.key }}}
{{- end }}
{{- if include "imagegen.isSet" $s.cloudsYaml }}
- name: OS_CLIENT_CONFIG_FILE
  value: {{ include "imagegen.secretsDir" . }}/openstack/clouds.yaml
{{- end }}
{{- if include "imagegen.isSet" $s.awsCredentials }}
- name: AWS_SHARED_CREDENTIALS_FILE
  value: {{ include "imagegen.secretsDir" . }}/aws/credentials
{{- end }}
{{- if include "imagegen.isSet" $s.awsConfig }}
- name: AWS_CONFIG_FILE
  value: {{ include "imagegen.secretsDir" . }}/aws/config
{{- end }}
{{- end -}}

{{/* volumes: the config, the secret files (one projected volume) and a writable /tmp. */}}
{{- define "imagegen.volumes" -}}
{{- $root := . -}}
{{- $s := .Values.secrets -}}
- name: config
  configMap:
    name: {{ include "imagegen.fullname" . }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ include "imagegen.secretName" (dict "root" $root "ref" $s.webhookSecret) }}
          items: [{key: {{ $s.webhookSecret.key }}, path: webhook-secret}]
{{- if .Values.config.github.appId }}
      - secret:
          name: {{ include "imagegen.secretName" (dict "root" $root "ref" $s.githubPrivateKey) }}
          items: [{key: {{ $s.githubPrivateKey.key }}, path: github-app.pem}]
{{- end }}
{{- if include "imagegen.isSet" $s.githubToken }}
      - secret:
          name: {{ include "imagegen.secretName" (dict "root" $root "ref" $s.githubToken) }}
          items: [{key: {{ $s.githubToken.key }}, path: github-token}]
{{- end }}
{{- if include "imagegen.isSet" $s.cloudsYaml }}
      - secret:
          name: {{ include "imagegen.secretName" (dict "root" $root "ref" $s.cloudsYaml) }}
          items: [{key: {{ $s.cloudsYaml.key }}, path: openstack/clouds.yaml}]
{{- end }}
{{- if include "imagegen.isSet" $s.awsCredentials }}
      - secret:
          name: {{ include "imagegen.secretName" (dict "root" $root "ref" $s.awsCredentials) }}
          items: [{key: {{ $s.awsCredentials.key }}, path: aws/credentials}]
{{- end }}
{{- if include "imagegen.isSet" $s.awsConfig }}
      - secret:
          name: {{ include "imagegen.secretName" (dict "root" $root "ref" $s.awsConfig) }}
          items: [{key: {{ $s.awsConfig.key }}, path: aws/config}]
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "imagegen.volumeMounts" -}}
- {name: config, mountPath: /etc/imagegen/config, readOnly: true}
- {name: secrets, mountPath: {{ include "imagegen.secretsDir" . }}, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* checksums roll the pods when the config or the chart's Secret changes. */}}
{{- define "imagegen.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- /* Of the values, not the rendered Secret: that one holds random values on a first install. */}}
checksum/secrets: {{ toJson (list .Values.secrets .Values.redis) | sha256sum }}
{{- end -}}
