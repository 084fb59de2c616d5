# Keyward developer entry points. `make help` lists them.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

CONTROLLER_GEN := go tool controller-gen
# Where the cached control plane binaries live; hack/controlplane.sh builds them on first use.
CONTROLPLANE = hack/controlplane.sh
GO_TEST_FLAGS ?= -count=1
LOCAL_DIR ?= $(CURDIR)/.local
VERSION ?= v0.0.0-dev
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Image timestamps come from the commit, so two builds of one commit give the same digests.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: generate
generate: ## Regenerate deepcopy code from the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: ## Regenerate the CRD and RBAC YAML from markers, and docs/reference/api.md from the CRD.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=verifier-role paths=./pkg/verifier/... output:rbac:artifacts:config=config/verifier
	go run ./hack/apidocs

.PHONY: chart-files
chart-files: controlplane ## Copy the bundle's CRDs, RBAC and policies into charts/keyward/files (the chart test fails when stale).
	go run ./hack/chartfiles

.PHONY: verify
verify: ## Fail when generated files are stale, Go code is not gofmt'ed, or go vet complains.
	hack/verify-generated.sh
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt'ed: $$out"; exit 1; fi
	go vet ./...

.PHONY: controlplane
controlplane: ## Build kube-apiserver, etcd and kubectl into the cache (once; later runs reuse it).
	@$(CONTROLPLANE) ensure

.PHONY: build
build: ## Build the manager, the verifier and the kubectl plugin into bin/.
	go build -o bin/manager ./cmd
	go build -o bin/verifier ./cmd/verifier
	go build -o bin/kubectl-keyward ./cmd/kubectl-keyward

# The race detector runs where Keyward's own concurrency is (controllers, verifier, the pure packages).
# The packaging packages (the Helm SDK test, image builds, the bundle, the plugin's CLI, config, hack) run
# without it: their code is sequential, and race-compiling their large dependency trees (Helm, cli-runtime,
# go-containerregistry: about 440 packages) again would cost a cold CI run minutes for nothing.
# test/docs runs the docs' examples against make run-local's binaries, which it builds itself.
NORACE_PKGS := ./internal/chart ./internal/images ./internal/release ./internal/plugin ./config/... ./hack/... ./cmd/kubectl-keyward ./test/docs
RACE_PKGS = $(shell go list ./... | grep -v -E '/(internal/(chart|images|release|plugin)|config|hack|cmd/kubectl-keyward|test/docs)(/|$$)')

.PHONY: test
test: test-envtest ## Everything CI runs: verify, unit and envtest tests, then the e2e on a real node (make e2e).
	$(MAKE) --no-print-directory e2e

.PHONY: lint
lint: ## Run golangci-lint (.golangci.yml; the version hack/tools.sh pins, built once into the cache).
	"$$(hack/tools.sh golangci-lint)" run ./...

.PHONY: test-envtest
test-envtest: verify lint ## Run verify, lint, unit and envtest tests against a real kube-apiserver and etcd (make test without the node).
	assets=$$($(CONTROLPLANE) local); export KUBEBUILDER_ASSETS="$$assets"; \
	go test $(GO_TEST_FLAGS) -race $(RACE_PKGS) && \
	go test $(GO_TEST_FLAGS) $(NORACE_PKGS)

.PHONY: test-unit
test-unit: ## Run every test that needs no control plane (nothing but Go); the rest are skipped.
	KEYWARD_SKIP_ENVTEST=1 go test $(GO_TEST_FLAGS) ./...

.PHONY: test-stress
test-stress: ## make test three times, then -race -count=20 of ./pkg/verifier and ./controllers, beside two CPU hogs.
	hack/stress.sh

.PHONY: bench
bench: ## Run every benchmark: keys, verifier (Verify, Verify during a drain, memory, HTTP, 100,000 keys, the largest APIKeys), control plane (1,000 and 10,000 APIKeys, the largest APIKeys, failover, revoke latency, leak report to refusal, forged status put back).
	go test -run '^$$' -bench . -benchmem -count=1 ./internal/...
	assets=$$($(CONTROLPLANE) ensure); export KUBEBUILDER_ASSETS="$$assets"; \
	go test -run '^$$' -bench 'Verify|Memory|RejectOversized' -benchmem -count=1 ./pkg/verifier/... && \
	go test -run '^$$' -bench 'HTTPForwardAuth|RevokeToReject|LeakReportToRefusal|VerifierAtScale|LargestAPIKeys' -benchtime 1x -count=1 -timeout 60m ./pkg/verifier/serve && \
	go test -run '^$$' -bench 'ThousandAPIKeys|ManagerAtScale|LeaderTakeover|LargestAPIKeys' -benchtime 1x -count=1 -timeout 60m ./controllers && \
	go test -run '^$$' -bench ForgedStatusPutBack -benchtime 20x -count=1 ./controllers

.PHONY: images
images: ## Build the manager and verifier OCI images into dist/ (OCI layout and docker-load tarballs; no Docker needed).
	go run ./hack/images --version $(VERSION) --revision $(REVISION) --created $(SOURCE_DATE_EPOCH) --out dist

.PHONY: release
release: ## Write a release into dist/: images, keyward.yaml (images pinned by digest) and keyward-crds.yaml. VERSION=vX.Y.Z
	$(CONTROLPLANE) ensure >/dev/null
	go run ./hack/release --version $(VERSION) --revision $(REVISION) --created $(SOURCE_DATE_EPOCH) --out dist

# Where make e2e puts its images, test binary and (on failure) the node's logs.
E2E_DIR ?= $(CURDIR)/.e2e
# An earlier commit of main: the upgrade test installs its chart and images first, then upgrades to the tree.
E2E_BASE ?= d8c329a25ee92c4bb9b88fdef62df8163423c044
KEYWARD_CACHE ?= $(or $(KEYWARD_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/keyward)
# How long one wait of the e2e may poll before it fails: kubelet syncs and Pod starts on a busy 2-core machine.
E2E_WAIT ?= 10m

.PHONY: e2e-prepare
e2e-prepare: release
	$(CONTROLPLANE) node >/dev/null
	go build -o bin/kubectl-keyward ./cmd/kubectl-keyward
	go build -o bin/node ./hack/node
	KUBEBUILDER_ASSETS=$$($(CONTROLPLANE) path) go run ./hack/e2e --out $(E2E_DIR) --dist dist $(if $(E2E_BASE),--base $(E2E_BASE)) --cache $(KEYWARD_CACHE)/e2e
	go test -c -o $(E2E_DIR)/e2e.test ./test/e2e

.PHONY: e2e
e2e: VERSION = v0.0.0-e2e
e2e: e2e-prepare ## Run Keyward as users do on a real node (hack/node): chart, Pods from the tree's images, workloads, nginx, upgrade.
	rm -rf $(E2E_DIR)/logs
	PATH="$(CURDIR)/bin:$$PATH" KEYWARD_E2E_DIR=$(E2E_DIR) KEYWARD_TEST_WAIT=$(E2E_WAIT) \
	bin/node --assets "$$($(CONTROLPLANE) path)" --pause $(E2E_DIR)/pause.oci.tar --logs $(E2E_DIR)/logs \
		--images $(E2E_DIR)/workload.oci.tar --images $(E2E_DIR)/keyward.oci.tar --images $(E2E_DIR)/base.oci.tar \
		-- $(E2E_DIR)/e2e.test -test.v -test.count=1 -test.timeout 60m

.PHONY: run-cluster
run-cluster: VERSION = v0.0.0-dev
run-cluster: E2E_BASE =
run-cluster: e2e-prepare ## Start the e2e's real node, install the chart with the tree's images (hack/run-cluster.sh), print the kubeconfig; Ctrl-C stops everything.
	PATH="$(CURDIR)/bin:$$PATH" exec bin/node --serve --assets "$$($(CONTROLPLANE) path)" --pause $(E2E_DIR)/pause.oci.tar \
		--images $(E2E_DIR)/workload.oci.tar --images $(E2E_DIR)/keyward.oci.tar -- hack/run-cluster.sh $(E2E_DIR)/values.yaml

# Extra flags for the manager and the verifier of make run-local, for example
#   make run-local MANAGER_FLAGS="--webhook-workers=2" VERIFIER_FLAGS="--usage-flush-interval=2s"
MANAGER_FLAGS ?=
VERIFIER_FLAGS ?=

.PHONY: run-local
run-local: build ## Start etcd, kube-apiserver and kube-controller-manager, install the bundle, run the manager, the verifier and a webhook receiver; prints a ready line.
	go build -o bin/runlocal ./hack/runlocal
	assets=$$($(CONTROLPLANE) local); \
	KUBEBUILDER_ASSETS="$$assets" exec bin/runlocal --dir "$(LOCAL_DIR)" --manager bin/manager --verifier bin/verifier \
		--manager-flags "$(MANAGER_FLAGS)" --verifier-flags "$(VERIFIER_FLAGS)"
