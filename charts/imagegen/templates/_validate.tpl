{{/* validate: refuse value combinations imagegen would refuse at start, at install time instead. */}}
{{- define "imagegen.validate" -}}
{{- $s := .Values.secrets -}}
{{- if and .Values.config.github.appId (not (include "imagegen.isSet" $s.githubPrivateKey)) -}}
{{- fail "config.github.appId is set: give the App's private key in secrets.githubPrivateKey (value or existingSecret)" -}}
{{- end -}}
{{- if and .Values.config.github.appId (include "imagegen.isSet" $s.githubToken) -}}
{{- fail "set either config.github.appId (a GitHub App) or secrets.githubToken, not both" -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "standalone") (not (include "imagegen.isSet" .Values.redis.url)) -}}
{{- fail "redis.mode is standalone: give redis.url (value or existingSecret)" -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "sentinel") (not .Values.redis.sentinel.addrs) -}}
{{- fail "redis.mode is sentinel: list the Sentinels (host:port) in redis.sentinel.addrs" -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "cluster") (not .Values.redis.cluster.addrs) -}}
{{- fail "redis.mode is cluster: list some cluster nodes (host:port) in redis.cluster.addrs" -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "bundled") (eq .Values.redis.durability "replica") -}}
{{- fail "redis.durability is replica, but the bundled Redis has no replica: every delivery would be refused; use ack or fsync, or a Redis with replicas (mode sentinel or cluster)" -}}
{{- end -}}
{{- if and $s.apiTokens.existingSecret (not $s.apiTokens.keys) -}}
{{- fail "secrets.apiTokens.existingSecret is set: list its keys in secrets.apiTokens.keys" -}}
{{- end -}}
{{- if eq (int .Values.server.port) (int .Values.server.metricsPort) -}}
{{- fail "server.metricsPort must differ from server.port: /metrics gets its own listener (metrics_listen)" -}}
{{- end -}}
{{- $_ := include "imagegen.workerGracePeriod" . -}}
{{- end -}}
