# The README's two commands. Both do all set-up on a fresh machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint demo

DEMO_OUT ?= out/demo

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q test

lint: setup
	$(PY) -m ruff check .

# The bundled compact model (trained on the built-in synthetic world, data/demo/) on freshly generated
# held-out synthetic frames: heatmaps, overlays, open-set labels and unknown instances in $(DEMO_OUT)/results.
demo: setup
	$(PY) -m m2a_core synth anomaly --out $(DEMO_OUT)/frames --num 6 --seed 2026 --height 128 --width 256 --no-progress
	$(PY) -m m2a_core infer --weights data/demo/m2a_demo.safetensors --short-side 128 --max-size 1024 \
		--openset --save-raw --out $(DEMO_OUT)/results $(DEMO_OUT)/frames/images/*.png
	@echo "demo results in $(DEMO_OUT)/results (model quality: data/demo/metrics.md)"
