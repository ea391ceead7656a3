# fer-study: `make study` runs the study, `make test` runs every test; both first set up .venv when needed.
#
#   make              set up .venv: python3 -m venv, pip install -r requirements/lock.txt (the exact versions), then
#                     pip install --no-deps -e . and the `python3` Jupyter kernel; LOCKED=0: pip install -e '.[EXTRAS]'
#                     (whatever is newest today) instead of the lock
#   make study        run the study into outputs/<timestamp>-<name>/: params/paper.yaml when FER2013 is found
#                     (DATA=..., $FER2013_DIR or data/fer2013), else params/smoke.yaml on synthetic data
#   make test         pytest (TensorFlow backend), the backend tests again on JAX with the distribution tests on
#                     JAX's 2 CPU devices, then the notebooks with nbval; each pass on PYTEST_WORKERS processes
#   make lab          JupyterLab on the project (the notebooks import the installed fer_lib)
#   make list         the runs in outputs/
#   make gpu-bundle   gpu/bundle/: wheels, FER2013 and the project for an offline GPU machine (bash gpu/bundle/run.sh)
#   make gpu-rehearsal  that bundle's whole run rehearsed on this CPU in a stand-in environment (no TensorFlow)
#   make lock         regenerate requirements/lock.txt with .venv's uv (pinned by the lock): pyproject.toml's
#                     dependencies and the extras tf,jax,dev,lab, one universal resolution (markers) for CPython >= 3.11,
#                     of the releases uploaded before LOCK_DATE, so it is unchanged until pyproject.toml or LOCK_DATE moves
#   make lock-upgrade  move LOCK_DATE (in this Makefile) to today, 00:00 UTC (or to LOCK_DATE=...), then make lock
#
# Variables: PYTHON (default python3, >= 3.11), VENV (.venv), LOCKED (1: install the lock; 0: resolve anew),
# EXTRAS (tf,jax,dev,lab; another list only with LOCKED=0: the lock holds all four), DATA (a FER2013 path),
# PARAMS (a params file instead of the automatic choice), ARGS (more `fer-study run` arguments, e.g. ARGS='-p epochs=5'),
# PYTEST_ARGS (added to every pytest call), PYTEST_WORKERS (pytest-xdist's -n: auto, one per core; 0 runs in one
# process), LAB_ARGS.
# Setting up is idempotent: a stamp in .venv records a hash of pyproject.toml, the lock (when LOCKED=1), EXTRAS and
# LOCKED, and nothing is installed again until one of them changes; its second line says what was installed
# (`lock requirements/lock.txt <sha256>` or `unlocked`; tests/test_lock.py reads it).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := install

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= tf,jax,dev,lab
LOCKED ?= 1
LOCK := requirements/lock.txt
# `make lock` resolves only releases uploaded before this instant (uv --exclude-newer); `make lock-upgrade` moves it.
LOCK_DATE ?= 2026-12-01T00:00:00Z
LOCK_EXTRAS := tf jax dev lab
BIN := $(VENV)/bin
STAMP := $(VENV)/.fer-study-installed
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/python3/kernel.json
PYTEST := $(BIN)/python -m pytest
PYTEST_ARGS ?= --durations=10
PYTEST_WORKERS ?= auto
XDIST := -n $(PYTEST_WORKERS)
DATA ?=
PARAMS ?=
ARGS ?=
LAB_ARGS ?=

# The study's params: PARAMS if given; else the paper's protocol when FER2013 is found, else the synthetic smoke run.
FER2013_FOUND := $(strip $(DATA)$(FER2013_DIR)$(wildcard data/fer2013))
STUDY_PARAMS := $(if $(PARAMS),$(PARAMS),$(if $(FER2013_FOUND),params/paper.yaml,params/smoke.yaml))

.PHONY: install study test test-tf test-jax test-distribution test-notebooks lab list gpu-bundle gpu-rehearsal lock lock-upgrade help

# The stamp's key: sha256 of pyproject.toml, of the lock when LOCKED=1, and of the settings.
STAMP_KEY = $(PYTHON) -c 'import hashlib, sys; h = hashlib.sha256(); [h.update(open(f, "rb").read()) for f in sys.argv[2:]]; h.update(sys.argv[1].encode()); print(h.hexdigest())'
SHA256 = $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())'

install:
	@case "$(LOCKED)" in 1) inputs="pyproject.toml $(LOCK)";; 0) inputs=pyproject.toml;; \
		*) echo "LOCKED must be 1 (install $(LOCK)) or 0 (resolve pyproject.toml anew), not '$(LOCKED)'" >&2; exit 2;; esac; \
	if [ "$(LOCKED)" = 1 ] && [ ! -f "$(LOCK)" ]; then \
		echo "no $(LOCK): make install LOCKED=0, then make lock" >&2; exit 2; fi; \
	if [ "$(LOCKED)" = 1 ] && [ "$(EXTRAS)" != "$$(echo $(LOCK_EXTRAS) | tr ' ' ,)" ]; then \
		echo "$(LOCK) holds the extras $(LOCK_EXTRAS), all of them; for EXTRAS=$(EXTRAS) use LOCKED=0" >&2; exit 2; fi; \
	key=$$($(STAMP_KEY) 'extras=$(EXTRAS) locked=$(LOCKED)' $$inputs); \
	if [ -x "$(BIN)/fer-study" ] && [ -f "$(KERNEL_SPEC)" ] && [ "$$(head -n 1 '$(STAMP)' 2>/dev/null)" = "$$key" ]; then exit 0; fi; \
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "fer-study needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1). Try: make PYTHON=python3.11" >&2; exit 1; }; \
	[ -x "$(BIN)/python" ] || $(PYTHON) -m venv "$(VENV)"; \
	if [ "$(LOCKED)" = 1 ]; then \
		echo "==> setting up $(VENV) from $(LOCK) (LOCKED=0: the newest releases instead)"; \
		"$(BIN)/python" -m pip install --quiet -r "$(LOCK)"; \
		"$(BIN)/python" -m pip install --quiet --quiet --no-deps -e .; \
		check=$$("$(BIN)/python" -m pip check 2>&1) || echo "$$check"$$'\n'"warning: $(VENV) lacks a requirement" \
			"(pip check, above): is $(LOCK) older than pyproject.toml? Run make lock, then make install" >&2; \
		installed="lock $(LOCK) $$($(SHA256) "$(LOCK)")"; \
	else \
		echo "==> setting up $(VENV) with .[$(EXTRAS)], unlocked: the newest releases pyproject.toml allows"; \
		"$(BIN)/python" -m pip install --quiet -e '.[$(EXTRAS)]'; \
		installed=unlocked; \
	fi; \
	[ -f "$(KERNEL_SPEC)" ] || "$(BIN)/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fer-study)"; \
	printf '%s\n%s\n' "$$key" "$$installed" > "$(STAMP)"; \
	echo "==> $(VENV) ready: $$("$(BIN)/fer-study" --version) ($$installed)"

# The lock: one universal resolution (with markers) of pyproject.toml and the extras `make` installs, by the uv that
# the lock itself pins (in .venv). The lock's header records this command.
lock: install
	"$(BIN)/uv" pip compile pyproject.toml $(foreach extra,$(LOCK_EXTRAS),--extra $(extra)) --universal \
		--python-version 3.11 --exclude-newer $(LOCK_DATE) -o $(LOCK) >/dev/null

# Move LOCK_DATE forward (today 00:00 UTC, or LOCK_DATE=... on the command line), in this Makefile, then re-lock.
lock-upgrade:
	@date=$(if $(filter command line,$(origin LOCK_DATE)),$(LOCK_DATE),$$(date -u +%Y-%m-%dT00:00:00Z)); \
	$(PYTHON) -c 'import re, sys; t = open("Makefile").read(); n = re.sub(r"(?m)^LOCK_DATE \?= .*$$", "LOCK_DATE ?= " + sys.argv[1], t, count=1); open("Makefile", "w").write(n)' "$$date"; \
	echo "==> LOCK_DATE ?= $$date (Makefile)"; \
	$(MAKE) --no-print-directory lock LOCK_DATE="$$date"

study: install
	"$(BIN)/fer-study" run --params $(STUDY_PARAMS) $(if $(DATA),--data "$(DATA)") $(ARGS)

test: install
	$(MAKE) --no-print-directory test-tf
	$(MAKE) --no-print-directory test-jax
	$(MAKE) --no-print-directory test-notebooks

# The tests marked `alone` (whole runs of the real notebooks) after the others, in one process: beside another test
# on 2 cores each would take more than a minute.
test-tf: install
	@echo "==> pytest (KERAS_BACKEND=$${KERAS_BACKEND:-tensorflow}, $(PYTEST_WORKERS) workers), then the 'alone' tests"
	$(PYTEST) $(XDIST) -m "not alone" $(PYTEST_ARGS)
	$(PYTEST) -m alone $(PYTEST_ARGS)

# The backend tests on JAX and the distribution tests in one process per worker on JAX's 2 CPU devices (see
# test-distribution): with the distribution off, which is `auto`'s choice on a CPU, 2 devices change nothing.
test-jax: install
	@echo "==> pytest -m 'backend or distribution' (KERAS_BACKEND=jax on 2 CPU devices, $(PYTEST_WORKERS) workers)"
	KERAS_BACKEND=jax JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=2 \
		XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }--xla_force_host_platform_device_count=2" \
		$(PYTEST) -m "backend or distribution" $(XDIST) $(PYTEST_ARGS)

# Training over 2 devices with keras.distribution, in a process of its own: JAX's device count is fixed when it
# starts. jax >= 0.4.38 reads JAX_NUM_CPU_DEVICES, older versions the XLA flag; JAX_PLATFORMS=cpu, so that a GPU
# machine also runs these on its CPU.
test-distribution: install
	@echo "==> pytest -m distribution (KERAS_BACKEND=jax on 2 CPU devices)"
	KERAS_BACKEND=jax JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=2 \
		XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }--xla_force_host_platform_device_count=2" \
		$(PYTEST) -m distribution $(PYTEST_ARGS)

# In two passes, a notebook per worker in each: 03_compare and 04_predict read the run that 02_train writes into
# outputs/, so they start after it (on a fresh clone there is no earlier run to fall back on).
NBVAL := $(PYTEST) --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg $(XDIST) --dist loadfile
test-notebooks: install
	@echo "==> nbval on notebooks/01-02, then 03-04 ($(PYTEST_WORKERS) workers, a notebook each)"
	$(NBVAL) notebooks/01_explore_data.ipynb notebooks/02_train.ipynb $(PYTEST_ARGS)
	$(NBVAL) notebooks/03_compare.ipynb notebooks/04_predict.ipynb $(PYTEST_ARGS)

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
