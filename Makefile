# The targets CI runs are exactly these; .ci/run calls `make ci`.
CARGO ?= cargo
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)
ifeq ($(NEXTEST),yes)
TEST_CMD = $(CARGO) nextest run --workspace --no-fail-fast
else
TEST_CMD = $(CARGO) test --workspace --no-fail-fast
endif

.PHONY: build test lint crds check-crds ci demo bench

build:
	$(CARGO) build --workspace --all-targets

test:
	$(TEST_CMD)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Regenerate crds/ from the API types.
crds:
	$(CARGO) run -q -p sextant -- crds --out-dir crds

# Fails when crds/ is not what the API types generate.
check-crds:
	@tmp=$$(mktemp -d) && $(CARGO) run -q -p sextant -- crds --out-dir $$tmp \
	  && diff -ru crds $$tmp || { echo "crds/ is out of date: run 'make crds' and commit"; exit 1; }

ci: lint check-crds test

# The README's first command: the demo on the bundled example mesh.
DEMO_PROXY ?= sidecar~127.0.1.1~productpage-v1-0.default~default.svc.cluster.local
demo:
	$(CARGO) build -q -p sextant
	./target/debug/sextant validate -f examples/
	./target/debug/sextant proxy-config all --config-dir examples --proxy '$(DEMO_PROXY)' \
	  --meta INTERCEPTION_MODE=NONE --meta SEXTANT_BIND_ADDRESS=127.0.0.2

# Benchmarks (release builds); figures go in docs/BENCHMARKS.md.
bench:
	$(CARGO) bench -p sextant-compiler --bench compile
