# fer-study: `make study` runs the study, `make test` runs every test; both first set up .venv when needed.
#
#   make              set up .venv: python3 -m venv, pip install -e '.[tf,jax,dev,lab]', the `python3` Jupyter kernel
#   make study        run the study into outputs/<timestamp>-<name>/: params/paper.yaml when FER2013 is found
#                     (DATA=..., $FER2013_DIR or data/fer2013), else params/smoke.yaml on synthetic data
#   make test         pytest (TensorFlow backend), the backend tests again on JAX, the distribution tests on JAX's
#                     2 CPU devices (make test-distribution), then the notebooks with nbval
#   make lab          JupyterLab on the project (the notebooks import the installed fer_lib)
#   make list         the runs in outputs/
#   make gpu-bundle   gpu/bundle/: wheels, FER2013 and the project for an offline GPU machine (bash gpu/bundle/run.sh)
#   make gpu-rehearsal  that bundle's whole run rehearsed on this CPU in a stand-in environment (no TensorFlow)
#
# Variables: PYTHON (default python3, >= 3.11), VENV (.venv), EXTRAS (tf,jax,dev,lab), DATA (a FER2013 path),
# PARAMS (a params file instead of the automatic choice), ARGS (more `fer-study run` arguments, e.g. ARGS='-p epochs=5'),
# PYTEST_ARGS (added to every pytest call), LAB_ARGS.
# Setting up is idempotent: a stamp in .venv records a hash of pyproject.toml and EXTRAS, and nothing is installed
# again until one of them changes.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := install

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= tf,jax,dev,lab
BIN := $(VENV)/bin
STAMP := $(VENV)/.fer-study-installed
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/python3/kernel.json
PYTEST := $(BIN)/python -m pytest
PYTEST_ARGS ?= --durations=10
DATA ?=
PARAMS ?=
ARGS ?=
LAB_ARGS ?=

# The study's params: PARAMS if given; else the paper's protocol when FER2013 is found, else the synthetic smoke run.
FER2013_FOUND := $(strip $(DATA)$(FER2013_DIR)$(wildcard data/fer2013))
STUDY_PARAMS := $(if $(PARAMS),$(PARAMS),$(if $(FER2013_FOUND),params/paper.yaml,params/smoke.yaml))

.PHONY: install study test test-tf test-jax test-distribution test-notebooks lab list gpu-bundle gpu-rehearsal help

install:
	@key=$$($(PYTHON) -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read() + sys.argv[1].encode()).hexdigest())' '$(EXTRAS)'); \
	if [ -x "$(BIN)/fer-study" ] && [ -f "$(KERNEL_SPEC)" ] && [ "$$(cat '$(STAMP)' 2>/dev/null)" = "$$key" ]; then exit 0; fi; \
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "fer-study needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1). Try: make PYTHON=python3.11" >&2; exit 1; }; \
	echo "==> setting up $(VENV) with .[$(EXTRAS)]"; \
	[ -x "$(BIN)/python" ] || $(PYTHON) -m venv "$(VENV)"; \
	"$(BIN)/python" -m pip install --quiet -e '.[$(EXTRAS)]'; \
	[ -f "$(KERNEL_SPEC)" ] || "$(BIN)/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fer-study)"; \
	echo "$$key" > "$(STAMP)"; \
	echo "==> $(VENV) ready: $$("$(BIN)/fer-study" --version)"

study: install
	"$(BIN)/fer-study" run --params $(STUDY_PARAMS) $(if $(DATA),--data "$(DATA)") $(ARGS)

test: install
	$(MAKE) --no-print-directory test-tf
	$(MAKE) --no-print-directory test-jax
	$(MAKE) --no-print-directory test-distribution
	$(MAKE) --no-print-directory test-notebooks

test-tf: install
	@echo "==> pytest (KERAS_BACKEND=$${KERAS_BACKEND:-tensorflow})"
	$(PYTEST) $(PYTEST_ARGS)

# Exit code 5 (no test collected) is fine here: it only means no test is marked `backend`.
test-jax: install
	@echo "==> pytest -m backend (KERAS_BACKEND=jax)"
	KERAS_BACKEND=jax $(PYTEST) -m backend $(PYTEST_ARGS) || { rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "no test is marked backend: nothing to run on JAX"; else exit $$rc; fi; }

# Training over 2 devices with keras.distribution, in a process of its own: JAX's device count is fixed when it
# starts. jax >= 0.4.38 reads JAX_NUM_CPU_DEVICES, older versions the XLA flag; JAX_PLATFORMS=cpu, so that a GPU
# machine also runs these on its CPU.
test-distribution: install
	@echo "==> pytest -m distribution (KERAS_BACKEND=jax on 2 CPU devices)"
	KERAS_BACKEND=jax JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=2 \
		XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }--xla_force_host_platform_device_count=2" \
		$(PYTEST) -m distribution $(PYTEST_ARGS)

test-notebooks: install
	@echo "==> nbval on notebooks/"
	$(PYTEST) --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks/ $(PYTEST_ARGS)

lab: install
	"$(BIN)/jupyter" lab $(LAB_ARGS)

list: install
	"$(BIN)/fer-study" list

# The offline GPU bundle for CPython $(GPU_PYTHON) (our GPU machine's); DATA as for `make study`.
GPU_PYTHON ?= 3.12
gpu-bundle: install
	"$(BIN)/python" gpu/make_bundle.py --python-version $(GPU_PYTHON) $(if $(DATA),--data "$(DATA)")

gpu-rehearsal: install
	PYTHON="$(PYTHON)" BUILDER="$(BIN)/python" bash gpu/rehearse.sh

help:
	@sed -n '1,/^$$/p' Makefile | sed 's/^# \{0,1\}//'
