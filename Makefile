# The two commands of the quick start, and the set-up both need.
#   make demo   a real, small PyTorch-vs-TensorFlow comparison through the local launcher + report
#   make test   lint, format check and the test suite: every behaviour once, real services and
#               frameworks (no `slow`, no `gpu`; about 15 minutes on 2 cores after set-up)
#   make check  lint and the fast tier: pure logic, no framework started (under 90 s)
#   make test-slow  the exhaustive matrices (marker `slow`: every framework x mode, interruptions,
#                   pools); CI runs it after `make test`
#   make test-containers  build the images and run the compose stack for real (root, Debian 12;
#                         scripts/compose-e2e: ~10 min cold, ~33 GB peak, leaves nothing behind)
#   make friction  install friction, measured (fresh venvs: ~10 min, ~8 GB of temporary disk)
ORCH := .venvs/orchestrator/bin
# The frameworks' list lives in one place (services/common/frameworks.py).
FRAMEWORKS := $(shell python3 services/common/frameworks.py names)

.PHONY: setup demo test test-slow check lint friction test-containers
setup:
	scripts/setup-env orchestrator
	for framework in $(FRAMEWORKS); do scripts/setup-env $$framework || exit 1; done

# `make demo DEMO_FRAMEWORKS=pytorch,tensorflow,jax` compares all three.
DEMO_FRAMEWORKS ?= pytorch,tensorflow
demo: setup
	$(ORCH)/fwbench run --frameworks $(DEMO_FRAMEWORKS) --models mobilenet_v2 \
	  --dataset synthetic --train-limit 1024 --test-limit 256 --epochs 2 --batch-size 32 \
	  --out results/demo --overwrite

lint:
	scripts/setup-env orchestrator
	$(ORCH)/ruff check .
	$(ORCH)/ruff format --check .

# The pure-logic tests on every core; then, one at a time, the tests that start a framework (two
# trainings at once on a small machine slow each 2-3x).
PURE := -m "not gpu and not slow and not framework"
test: setup lint
	scripts/ensure-docker-compose
	scripts/ensure-chromium
	$(ORCH)/pytest -n auto $(PURE)
	$(ORCH)/pytest -m "framework and not gpu and not slow"

test-slow: setup
	scripts/ensure-docker-compose
	scripts/ensure-chromium
	$(ORCH)/pytest -m "slow and not gpu"

check: lint
	scripts/ensure-docker-compose
	scripts/ensure-chromium
	$(ORCH)/pytest -n auto $(PURE)

test-containers:
	scripts/compose-e2e

friction: setup
	$(ORCH)/fwbench friction --out results/friction
