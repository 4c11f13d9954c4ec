# The two commands of the quick start, and the set-up both need.
#   make demo   a real, small PyTorch-vs-TensorFlow comparison through the local launcher + report
#   make test   lint, format check and the test suite (everything but the `gpu` marker)
#   make friction  install friction, measured (fresh venvs: ~10 min, ~8 GB of temporary disk)
ORCH := .venvs/orchestrator/bin
# The frameworks' list lives in one place (services/common/frameworks.py).
FRAMEWORKS := $(shell python3 services/common/frameworks.py names)

.PHONY: setup demo test lint friction
setup:
	scripts/setup-env orchestrator
	for framework in $(FRAMEWORKS); do scripts/setup-env $$framework || exit 1; done

demo: setup
	$(ORCH)/fwbench run --frameworks pytorch,tensorflow --models mobilenet_v2 \
	  --dataset synthetic --train-limit 1024 --test-limit 256 --epochs 2 --batch-size 32 \
	  --out results/demo --overwrite

lint: setup
	$(ORCH)/ruff check .
	$(ORCH)/ruff format --check .

test: lint
	scripts/ensure-docker-compose
	$(ORCH)/pytest -m "not gpu"

friction: setup
	$(ORCH)/fwbench friction --out results/friction
