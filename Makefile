# The README's two commands. Both do all set-up on a fresh machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint demo demo-bag

DEMO_OUT ?= out/demo

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q test

lint: setup
	$(PY) -m ruff check .

# The node's processing (m2a_bag_eval: the node's conversion, model, calibration and published images) over the
# sample bag data/demo/synth_heldout (frames of the bundled model's held-out synthetic benchmark, with ground
# truth) with the bundled model and config/anomaly.yaml: heatmaps, open-set label images and overlays with
# unknown instances in $(DEMO_OUT)/pictures, $(DEMO_OUT)/contact_sheet.png, and the metrics table (AuPRC, FPR95,
# sIoU, PPV, mean F1, open-mIoU) in $(DEMO_OUT)/report.md. Inference runs at the size the calibration was made
# at (read from the calibration file beside the weights), so its open-set threshold holds.
DEMO_WEIGHTS ?= data/demo/m2a_demo.safetensors
DEMO_BAG ?= data/demo/synth_heldout
DEMO_BAG_FRAMES ?= 90
calibrated = $(shell $(PY) -c "import json, sys; print(json.load(open(sys.argv[1]))['predictor_options'][sys.argv[2]])" \
	$(DEMO_WEIGHTS:.safetensors=.calibration.json) $(1))

demo: setup
	$(PY) -m m2a_ros.bags.evaluate --bag $(DEMO_BAG) --image-topic /camera/front/image_raw/compressed \
		--labels-topic /ground_truth/anomaly --semantic-topic /ground_truth/semantic --track obstacle \
		--params-file config/anomaly.yaml --weights $(DEMO_WEIGHTS) --set calibration_file=auto \
		--set short_side=$(call calibrated,short_side) --set max_size=$(call calibrated,max_size) \
		--pictures --out $(DEMO_OUT)
	@echo "demo: pictures in $(DEMO_OUT)/pictures (heatmap, open-set labels, overlay per frame), contact sheet" \
		"$(DEMO_OUT)/contact_sheet.png, metrics table in $(DEMO_OUT)/report.md, node outputs in $(DEMO_OUT)/result_bag"

# Regenerate the sample bag (deterministic: the same bytes): the first $(DEMO_BAG_FRAMES) frames of the held-out
# benchmark of training/make_demo_model.py, lossless PNG, 10 Hz.
demo-bag: setup
	$(PY) -m m2a_ros.bags.sample --out $(DEMO_BAG) --frames $(DEMO_BAG_FRAMES)
