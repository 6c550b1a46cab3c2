# mk/chart.mk — the Helm chart's checks (included from the Makefile).
#   make helm         installs helm into .cache/bin when it is missing
#   make chart-test   helm lint + helm template (defaults and every ci/*-values.yaml),
#                     then the Go tests in charts/imagegen/test, which decode every
#                     rendered manifest strictly into the Kubernetes API types.
# helm is built from source with `go install` (the module proxy serves exact
# versions, not @latest); the binary is cached, so only the first run is slow.
GO ?= go
HELM_VERSION ?= v3.22.0
CHART_DIR := charts/imagegen
CHART_BIN := $(CURDIR)/.cache/bin
HELM := $(CHART_BIN)/helm
# helm built with go install (no release ldflags) assumes Kubernetes 1.20;
# render for a current one explicitly (the chart needs >= 1.25).
KUBE_VERSION ?= v1.34.0

.PHONY: helm chart-test

# Checks the installed helm's module version each time (go version -m: fast),
# so a missing or other-version binary is rebuilt.
helm:
	@mkdir -p $(CHART_BIN)
	@if ! $(GO) version -m "$(HELM)" 2>/dev/null | grep -qP '^\tmod\thelm.sh/helm/v3\t$(HELM_VERSION)\t'; then \
	  echo "installing helm $(HELM_VERSION) into $(CHART_BIN) (go install; a few minutes the first time)"; \
	  GOBIN=$(CHART_BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); \
	fi

chart-test: helm
	$(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART_DIR)
	@for v in $(CHART_DIR)/ci/*-values.yaml; do \
	  echo "$(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART_DIR) -f $$v"; \
	  $(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART_DIR) -f $$v || exit 1; \
	done
	$(HELM) template imagegen $(CHART_DIR) --kube-version $(KUBE_VERSION) >/dev/null
	$(HELM) template imagegen $(CHART_DIR) --kube-version $(KUBE_VERSION) -f $(CHART_DIR)/ci/all-on-values.yaml >/dev/null
	@# -mod=mod: the test module builds imagegen's config and cloud packages from
	@# this checkout, so a module the main go.mod gained is added to its go.sum.
	cd $(CHART_DIR)/test && HELM=$(HELM) KUBE_VERSION=$(KUBE_VERSION) GOFLAGS=-mod=mod $(GO) test -count=1 -timeout 5m ./...
