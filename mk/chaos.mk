# mk/chaos.mk — reliability under faults (issue 7; docs/RELIABILITY.md).
#   make chaos        the full fault-injection run: 200 builds, workers SIGKILLed 20 times,
#                     Redis restarted once, 1000 redelivered webhooks, 20 % / 5 % of cloud
#                     calls failing; prints the table (also kept in $(CHAOS_OUT))
#   make fuzz         each fuzz target for $(FUZZTIME)
#   make fuzz-short   each fuzz target for $(FUZZTIME_SHORT): what `make test` runs
# The small chaos run (24 builds) is part of `go test ./...` (package chaos), so
# `make test` needs only $(CHAOS_TEST_TARGETS) added to run the bounded fuzzing.
GO ?= go
FUZZTIME ?= 2m
FUZZTIME_SHORT ?= 10s
CHAOS_BUILDS ?= 200
CHAOS_REDELIVERIES ?= 1000
CHAOS_KILLS ?= 20
CHAOS_OUT ?= .cache/chaos-table.md
# package:target, one go test -fuzz per pair (go test fuzzes one target at a time).
FUZZ_TARGETS := ./server:FuzzWebhook ./github:FuzzPeekPush ./config:FuzzParse ./builder/spec:FuzzParse ./builder/spec:FuzzScriptFile ./github:FuzzFSPath ./internal/strictyaml:FuzzParse
# Hook for the root Makefile: `test: ... $(CHAOS_TEST_TARGETS)`.
CHAOS_TEST_TARGETS := fuzz-short

.PHONY: chaos fuzz fuzz-short

chaos: test-deps
	@mkdir -p $(dir $(CHAOS_OUT))
	CHAOS_BUILDS=$(CHAOS_BUILDS) CHAOS_REDELIVERIES=$(CHAOS_REDELIVERIES) CHAOS_KILLS=$(CHAOS_KILLS) \
	CHAOS_OUT=$(CURDIR)/$(CHAOS_OUT) \
	$(GO) test -count=1 -timeout 30m -run '^TestChaos$$' -v ./chaos
	@cat $(CHAOS_OUT)

# -fuzzminimizetime is short: the webhook target talks to Redis, and the default
# (60 s of minimizing each new input) would spend the whole budget minimizing.
define fuzz_one
	$(GO) test -run '^$$' -fuzz '^$(2)$$' -fuzztime $(3) -fuzzminimizetime 1s $(1)

endef

fuzz: test-deps
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_one,$(word 1,$(subst :, ,$(t))),$(word 2,$(subst :, ,$(t))),$(FUZZTIME)))

fuzz-short: test-deps
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_one,$(word 1,$(subst :, ,$(t))),$(word 2,$(subst :, ,$(t))),$(FUZZTIME_SHORT)))
