# imagegen — `make run` starts the service on the example config; `make test` passes all tests.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN := bin/imagegen
CONFIG ?= examples/imagegen.yaml
RUN_DIR ?= .run

.PHONY: all build run test test-deps run-deps vet fmt-check go-test clean

all: build

# chart-test (mk/chart.mk), bench (mk/bench.mk), chaos and fuzz (mk/chaos.mk),
# unit and lint (mk/dev.mk).
include $(wildcard mk/*.mk)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/imagegen

run-deps:
	scripts/install-deps.sh run

test-deps:
	scripts/install-deps.sh test

# Starts Redis (with AOF persistence, so accepted deliveries survive a restart)
# and imagegen serve on the example config.
run: run-deps build
	scripts/run.sh $(BIN) $(CONFIG) $(RUN_DIR)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Everything CI checks: formatting, vet, golangci-lint (mk/dev.mk), the Go suite (real Redis, sshd, QEMU,
# Chromium, the small chaos run), the Helm chart, and bounded fuzzing.
test: test-deps fmt-check vet lint go-test chart-test $(CHAOS_TEST_TARGETS)

go-test:
	IMAGEGEN_OCTOKIT_EXAMPLES=$(CURDIR)/.cache/octokit/node_modules/@octokit/webhooks-examples \
	$(GO) test -count=1 -timeout 25m ./...

clean:
	rm -rf bin $(RUN_DIR)
