# `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo compress-demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgekiln run examples/digits.toml --out out/digits

# Compress a model trained elsewhere: the example trains a ResNet-18 with plain timm first.
compress-demo: $(STAMP)
	$(PY) examples/compress/train_your_model.py --out out/your-model
	$(VENV)/bin/edgekiln compress --arch resnet18 --weights out/your-model/resnet18.safetensors \
		--data out/your-model/digits/train --test-data out/your-model/digits/test --image-size 32 \
		--target x86-server-avx2 --target pixel-6-cpu --allow-estimate --prune 0.6 --out out/compress

test: $(STAMP)
	$(VENV)/bin/pytest

test-all: $(STAMP)
	$(VENV)/bin/pytest -m ''

clean:
	rm -rf out .edgekiln-cache
