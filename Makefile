# CityCloud — entry points. Prerequisites: Go (>= 1.26) and Rust (>= 1.89); everything else
# (etcd, kube-apiserver, kube-controller-manager, helm) is built from Go modules and cached
# in $(CACHE), outside the repository.
SHELL := /bin/bash
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/citycloud
CLUSTER_DIR ?= $(CURDIR)/.cluster
CARGO ?= cargo
TESTBED = $(CARGO) run -q -p citycloud-tests --bin testbed --
export CITYCLOUD_CACHE = $(CACHE)

.PHONY: help build control-plane node-deps node cluster-up node-import cluster-down kubeconfig crds lint unit deny test bench demo demo-down clean \
	image-tools image probe-image image-smoke

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## build the operator and the test bed
	$(CARGO) build --workspace --all-targets

control-plane: ## build (or find cached) etcd, kube-apiserver, kube-controller-manager and helm
	@bash tests/cluster/build.sh

node-deps: ## install the node's Debian packages (containerd, runc, CNI plugins, iptables, ipset, gcc) if missing
	@bash tests/cluster/node/deps.sh

node: control-plane node-deps ## build (or find cached) kubelet, kube-scheduler, kube-proxy, kube-router, CoreDNS, pause and probe images
	@bash tests/cluster/build-node.sh

NODE ?=
IMAGES ?=

cluster-up: control-plane $(if $(NODE),node) ## start the local control plane on loopback (admin kubeconfig in .cluster/); NODE=1 adds a real node, IMAGES="a.tar b.tar" imports OCI archives into it
	@$(TESTBED) up --dir $(CLUSTER_DIR) $(if $(NODE),--node $(foreach i,$(IMAGES),--image $(i)))

node-import: ## import OCI image archives into the running node's containerd, e.g. make node-import IMAGES=target/image/citycloud-operator.tar
	@$(TESTBED) import --dir $(CLUSTER_DIR) $(IMAGES)

cluster-down: ## stop the local control plane (and the node: processes, namespaces, cgroups)
	@$(TESTBED) down --dir $(CLUSTER_DIR)

kubeconfig: ## print a kubeconfig for AS_USER in AS_GROUPS (space-separated), e.g. make kubeconfig AS_USER=an AS_GROUPS=sotttt-admins
	@$(TESTBED) kubeconfig --dir $(CLUSTER_DIR) --user "$(AS_USER)" $(foreach g,$(AS_GROUPS),--group "$(g)")

crds: control-plane ## regenerate crds/, the chart's copy of them and deploy/citycloud-operator.yaml
	$(CARGO) run -q -p citycloud-operator -- crds --dir crds
	cp crds/*.yaml charts/citycloud-operator/crds/
	"$$(bash tests/cluster/build.sh)/helm" template citycloud-operator charts/citycloud-operator --namespace citycloud-system \
	  --include-crds --kube-version 1.30.0 > deploy/citycloud-operator.yaml

lint: ## rustfmt and clippy, as CI runs them
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The daily loop: needs neither Go nor a control plane, and takes seconds once target/ is warm.
unit: lint ## the fast loop, no Go, no control plane: rustfmt, clippy, unit tests of every crate, rustdoc with warnings denied
	$(CARGO) test --workspace --lib --bins
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

# cargo-deny, built once into the cache (outside the repository), keyed by its version.
DENY_VERSION ?= 0.20.2
DENY = $(CACHE)/cargo-deny-$(DENY_VERSION)/bin/cargo-deny

$(DENY):
	$(CARGO) install cargo-deny --version $(DENY_VERSION) --locked --root $(CACHE)/cargo-deny-$(DENY_VERSION)

# Advisories need the RustSec database (a git clone from GitHub): run them where that is
# reachable, `make deny DENY_CHECKS=` (all checks) or `cargo deny check advisories`.
DENY_CHECKS ?= licenses bans sources

deny: $(DENY) ## cargo-deny: licenses, banned/duplicate crates, crates.io as the only source (deny.toml)
	$(DENY) --manifest-path Cargo.toml check $(DENY_CHECKS)

# unit first: a formatting slip or a failing unit test stops the run before Go builds anything.
test: unit control-plane image-tools ## everything CI runs: the unit loop, integration tests on a real control plane, the images run under runc
	$(CARGO) test --workspace --no-fail-fast --test '*'
	@# The operator's image, packed from the binary the tests just ran (no second compile), and
	@# the probe's: both must start under runc as the chart runs them (user 65532, read-only root).
	$(MAKE) --no-print-directory image-smoke IMAGE_PROFILE=debug IMAGE_BINARY=$(CURDIR)/target/debug/operator-under-test

DEMO_DIR ?= .demo

# NODE=1: the same on a cluster with a real node, the operator running in it as a pod from its
# image (packed from the debug build: no release compile), installed by `helm upgrade --install`.
demo: $(if $(NODE),node image-tools) ## Hải Phòng's agencies on a local control plane with the operator running; prints what to explore (NODE=1: on a real node, the operator's image installed by the chart)
	@bash tests/cluster/build.sh > /dev/null
	$(if $(NODE),bash tests/image/build.sh operator debug,$(CARGO) build --release -p citycloud-operator)
	$(CARGO) build -p citycloud-demo --bin demo
	@$(CARGO) run -q -p citycloud-demo --bin demo -- up --dir $(DEMO_DIR) $(if $(NODE),--node --image target/image/citycloud-operator-debug.tar,--operator target/release/citycloud-operator)

demo-down: ## stop the demo's operator and control plane (and node: processes, namespaces, cgroups), remove .demo/
	@$(CARGO) run -q -p citycloud-demo --bin demo -- down --dir $(DEMO_DIR)

BENCH_ARGS ?=

bench: control-plane ## provisioning throughput vs the API server's own limit, idle-resync writes, operator CPU/RSS, budget flow; quick run: make bench BENCH_ARGS="--tenants 50"
	$(CARGO) build --release -p citycloud-operator
	$(CARGO) build --release -p citycloud-bench --bin bench
	target/release/bench $(BENCH_ARGS)

# The operator's image without a Docker daemon (buildah; the Dockerfile's final stage, fed the
# binary built here). release: the static-pie release binary, as published; debug: the test
# build's binary with the shared libraries it loads (seconds, no second compile; IMAGE_BINARY=
# packs another build of the CLI). Same name and tag either way: the chart's default.
IMAGE_PROFILE ?= release

image-tools: ## install buildah, skopeo, umoci, runc and jq with apt-get when missing
	@bash tests/image/build.sh tools

image: image-tools ## the operator's image as the chart names it, in target/image/citycloud-operator.tar (IMAGE_PROFILE=debug: -debug.tar, from target/debug)
	@bash tests/image/build.sh operator $(IMAGE_PROFILE)

probe-image: image-tools ## the traffic tests' probe, localhost/citycloud-probe:<version>, in target/image/citycloud-probe.tar
	@bash tests/image/build.sh probe

image-smoke: image probe-image ## run both images under runc: operator --help and version, probe serve/get on loopback
	@bash tests/image/smoke.sh $(IMAGE_PROFILE)

clean: ## remove build output (the cached control plane stays in $(CACHE))
	$(CARGO) clean
