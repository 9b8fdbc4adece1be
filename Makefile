# Two entry points, each one command on a fresh machine:
#   make demo   installs audiomill (with the SNAC extra) and tokenizes a generated speech corpus
#   make test   installs what the tests need (espeak-ng included) and runs the test suite
PYTHON ?= python3
# The torch to install first. Every later pip call is pinned to it (.constraints.txt),
# so pip never swaps it for another build. On a GPU machine: make demo TORCH=torch
TORCH ?= torch==2.13.0
PIP := $(PYTHON) -m pip

.PHONY: install demo system-deps test-deps test

.constraints.txt:
	$(PIP) install "$(TORCH)"
	$(PYTHON) -c "import torch; print('torch==' + torch.__version__)" > $@

install: .constraints.txt
	$(PIP) install -c .constraints.txt -e ".[snac]"

demo: install
	$(PYTHON) -m audiomill demo --out demo-out

system-deps:
	bash scripts/install-system-deps.sh

test-deps: system-deps .constraints.txt
	$(PIP) install -c .constraints.txt -e ".[test]"
	$(PIP) install -c .constraints.txt --no-deps spark-tts-lib==0.2.1
	$(PIP) install -c .constraints.txt --no-deps indextts2-inference==2.1.1
	$(PYTHON) scripts/reference_torchaudio.py
	$(PYTHON) scripts/reference_maskgct.py

test: test-deps
	$(PYTHON) -m pytest -q
