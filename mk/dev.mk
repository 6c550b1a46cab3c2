# mk/dev.mk — the developer's inner loop (included from the Makefile).
#   make unit   every test that needs no external service (go test -short): no
#               installs, no Redis, sshd, QEMU or Chromium; tests that need one
#               skip with a line saying which (internal/servicetest.Need)
#   make lint   golangci-lint, pinned, with the repository's .golangci.yml;
#               installed into .cache/bin on first use (go install, a few minutes)
GO ?= go
GOLANGCI_VERSION ?= v2.15.0
LINT_BIN := $(CURDIR)/.cache/bin
GOLANGCI := $(LINT_BIN)/golangci-lint

.PHONY: unit lint golangci

# -p 4: the slowest packages (the cloud drivers against their fakes) mostly
# wait on timers, so four at a time on two cores keep the loop under a
# minute (58 s with the default -p 2, 40 s with 4).
unit:
	$(GO) test -short -count=1 -p 4 ./...

# Checks the installed binary's module version each time (go version -m), so
# a missing or other-version binary is rebuilt.
golangci:
	@mkdir -p $(LINT_BIN)
	@if ! $(GO) version -m "$(GOLANGCI)" 2>/dev/null | grep -qP '^\tmod\tgithub.com/golangci/golangci-lint/v2\t$(GOLANGCI_VERSION)\t'; then \
	  echo "installing golangci-lint $(GOLANGCI_VERSION) into $(LINT_BIN) (go install; a few minutes the first time)"; \
	  GOBIN=$(LINT_BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION); \
	fi

lint: golangci
	$(GOLANGCI) run ./...
