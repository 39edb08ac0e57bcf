# The two commands of the README:
#   make demo   - set up .venv and run the live demo on embedded Redis
#   make test   - set up .venv (+ system parts the tests need) and run the suite
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv system clean model export

$(STAMP): pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/emotion-stream demo

system:
	scripts/install-system-deps.sh

test: $(STAMP) system
	$(PY) -m pytest $(PYTEST_ARGS)

# Reproduce the shipped classifier (model/weights/MODEL_CARD.md): both domains cropped
# through the serving path, then three runs of training across them. Offline; about 3.5 hours on 2 cores
# (interrupted, `emotion-stream train --resume build/model` continues it).
DATA ?= ../shared/data
model: $(STAMP)
	$(VENV)/bin/emotion-stream prepare $(DATA)/faces/train --out build/faces
	$(VENV)/bin/emotion-stream prepare $(DATA)/fer2013 --out build/fer2013
	$(VENV)/bin/emotion-stream train build/faces build/fer2013 --network resnet10 --epochs 30 --steps 250 --flip-average off --out build/model-v5
	$(VENV)/bin/emotion-stream train build/faces build/fer2013 --network resnet10 --init-from build/model-v5/model.keras \
		--epochs 16 --steps 250 --learning-rate 0.001 --warmup-epochs 0.5 --average-last 8 --flip-average off --out build/model-v6
	$(VENV)/bin/emotion-stream train build/faces build/fer2013 --network resnet10 --init-from build/model-v6/model.keras \
		--epochs 16 --steps 250 --learning-rate 0.001 --warmup-epochs 0.5 --average-last 8 --flip-average off --out build/model
	@echo "to ship it: cp build/model/model.keras model/weights/default.keras && cp build/model/model.json model/weights/default.json && make export"

# The shipped default as served without TensorFlow: ONNX, int8, calibrated on the photos'
# crops of `make model` (served), and LiteRT (predict).
WEIGHTS := model/weights
export: $(STAMP)
	$(VENV)/bin/emotion-stream export $(WEIGHTS)/default.keras --format tflite --out $(WEIGHTS)/default.tflite
	$(VENV)/bin/emotion-stream export $(WEIGHTS)/default.keras --format onnx --quantize int8 --calibration build/faces \
		--out $(WEIGHTS)/default.onnx

clean:
	rm -rf $(VENV) build *.egg-info
