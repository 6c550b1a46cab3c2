# mk/chaos.mk — reliability under faults (issues 7 and 23; docs/RELIABILITY.md).
#   make chaos        the full fault-injection run: 2000 builds on 3 workers, each build on
#                     two clouds (the simulated cloud, and the ec2 driver over TCP to a fake
#                     EC2 API whose instances are a real sshd); workers SIGKILLed 100 times
#                     over 10 minutes; 3 rounds of network faults between the workers and
#                     Redis, the EC2 API and SSH (black holes, resets, half-open connections,
#                     latency and bandwidth) and a Redis restart; 10000 redelivered webhooks;
#                     prints the table (also kept in $(CHAOS_OUT)). About 12 minutes on 2 cores.
#   make fuzz         each fuzz target for $(FUZZTIME)
#   make fuzz-short   each fuzz target for a count of executions (FUZZ_SHORT, about 10 s each):
#                     what `make test` runs
# The small chaos run (24 builds, one round of network faults, about 2.5 minutes) is part
# of `go test ./...` (package chaos), so `make test` needs only $(CHAOS_TEST_TARGETS) added
# to run the bounded fuzzing.
GO ?= go
FUZZTIME ?= 2m
CHAOS_BUILDS ?= 2000
CHAOS_WORKERS ?= 3
CHAOS_REDELIVERIES ?= 10000
CHAOS_KILLS ?= 100
CHAOS_KILL_EVERY_MS ?= 6000
CHAOS_NET_ROUNDS ?= 3
CHAOS_OUT ?= .cache/chaos-table.md
# package:target, one go test -fuzz per pair (go test fuzzes one target at a time).
FUZZ_TARGETS := ./server:FuzzWebhook ./github:FuzzPeekPush ./config:FuzzParse ./builder/spec:FuzzParse ./builder/spec:FuzzScriptFile ./github:FuzzFSPath ./internal/strictyaml:FuzzParse
# What make test fuzzes: package:target:executions, about 10 s each on 2 cores. A count,
# not a duration: Go 1.26's fuzzing coordinator can fail a target with a bare "context
# deadline exceeded" when -fuzztime's deadline passes while a worker is busy (a loaded
# machine; golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZ_SHORT := ./server:FuzzWebhook:15000x ./github:FuzzPeekPush:30000x ./config:FuzzParse:100000x \
	./builder/spec:FuzzParse:150000x ./builder/spec:FuzzScriptFile:80000x ./github:FuzzFSPath:15000x \
	./internal/strictyaml:FuzzParse:100000x
# Hook for the root Makefile: `test: ... $(CHAOS_TEST_TARGETS)`.
CHAOS_TEST_TARGETS := fuzz-short

.PHONY: chaos fuzz fuzz-short

chaos: test-deps
	@mkdir -p $(dir $(CHAOS_OUT))
	CHAOS_BUILDS=$(CHAOS_BUILDS) CHAOS_WORKERS=$(CHAOS_WORKERS) CHAOS_REDELIVERIES=$(CHAOS_REDELIVERIES) \
	CHAOS_KILLS=$(CHAOS_KILLS) CHAOS_KILL_EVERY_MS=$(CHAOS_KILL_EVERY_MS) CHAOS_NET_ROUNDS=$(CHAOS_NET_ROUNDS) \
	CHAOS_OUT=$(CURDIR)/$(CHAOS_OUT) \
	$(GO) test -count=1 -timeout 45m -run '^TestChaos$$' -v ./chaos
	@cat $(CHAOS_OUT)

# -fuzzminimizetime is short: the webhook target talks to Redis, and the default
# (60 s of minimizing each new input) would spend the whole budget minimizing.
define fuzz_one
	$(GO) test -run '^$$' -fuzz '^$(2)$$' -fuzztime $(3) -fuzzminimizetime 1s $(1)

endef

fuzz: test-deps
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_one,$(word 1,$(subst :, ,$(t))),$(word 2,$(subst :, ,$(t))),$(FUZZTIME)))

fuzz-short: test-deps
	$(foreach t,$(FUZZ_SHORT),$(call fuzz_one,$(word 1,$(subst :, ,$(t))),$(word 2,$(subst :, ,$(t))),$(word 3,$(subst :, ,$(t)))))
