# The two README commands are `make book` and `make test`; both call `make setup` first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= offline
# Sphinx warnings fail the book (after all of them are reported); `make book JB_FLAGS=`
# relaxes that while a chapter is being written.
JB_FLAGS ?= -W --keep-going
JB := $(VENV)/bin/jupyter-book
# The executed notebooks run in this virtual environment's kernel: papermill's `python3`
# resolves to .venv's interpreter when environment paths come first; nbval is told so.
export JUPYTER_PREFER_ENV_PATH := 1
# The MathJax script the book loads: _config.yml's first html_static_path + its mathjax_path
# (scripts.reproduce_steps.mathjax_script reads it there; a test keeps the two equal).
MATHJAX := _build/mathjax/mathjax/tex-chtml.js
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256 := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX_TARBALL := data/cache/mathjax-$(MATHJAX_VERSION).tgz
# $(call q,VALUE): VALUE as one single-quoted shell word, its own quotes escaped, so that a
# path with an apostrophe or spaces reaches the program intact.
q = '$(subst ','\'',$(1))'

.PHONY: setup test lint bench book book-html notebooks nbval nbval-book smoke-notebooks \
	mathjax clean readme check-book

setup: $(STAMP)

# Idempotent: reinstalls only when pyproject.toml or the lock change. The lock is
# environment.yml's pins (`name==version` lines), given to pip as constraints.
CONSTRAINTS := $(VENV)/constraints.txt
$(STAMP): pyproject.toml environment.yml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	sed -n 's/^ *- *\([A-Za-z0-9][A-Za-z0-9._-]*==[^ #]*\).*$$/\1/p' environment.yml > $(CONSTRAINTS)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check fdcam scripts tests notebooks
	$(VENV)/bin/yamllint --strict -c .yamllint.yml .github/workflows _config.yml _toc.yml \
	  CITATION.cff

# A test that hangs fails in minutes with every thread's stack printed (pytest-timeout),
# instead of using up a CI run's time; the slowest test takes about 25 s.
test: setup lint
	$(VENV)/bin/pytest -q --timeout=600 --timeout-method=thread
	@$(MAKE) --no-print-directory nbval

bench: setup
	$(PY) -m scripts.bench

# The paper end to end, resumable (scripts/reproduce.py; book/reproduce.md):
#   make reproduce IMAGENET_VAL=… VOC_ROOT=… [DEVICE=cuda] [VOC_DOWNLOAD=1] [SHARD=i/n]
#   make reproduce DRY_RUN=1        # offline CPU rehearsal: random weights, stand-in data
# Also: VOC_CHECKPOINT (weights fine-tuned elsewhere), RESULTS_DIR, STEPS (a comma list),
# N_IMAGES / N_VOC (the first N only), ENGINE (the protocol's forward passes: auto, compile,
# eager, onnxruntime; default auto, eager for a dry run).
.PHONY: reproduce bench-gpu
DEVICE ?= auto
reproduce: setup mathjax
	$(PY) -m scripts.reproduce --device $(call q,$(DEVICE)) \
	  $(if $(IMAGENET_VAL),--imagenet-val $(call q,$(IMAGENET_VAL))) \
	  $(if $(VOC_ROOT),--voc-root $(call q,$(VOC_ROOT))) \
	  $(if $(VOC_CHECKPOINT),--voc-checkpoint $(call q,$(VOC_CHECKPOINT))) \
	  $(if $(RESULTS_DIR),--results-dir $(call q,$(RESULTS_DIR))) \
	  $(if $(SHARD),--shard $(call q,$(SHARD))) $(if $(STEPS),--steps $(call q,$(STEPS))) \
	  $(if $(N_IMAGES),--n-images $(call q,$(N_IMAGES))) \
	  $(if $(N_VOC),--n-voc $(call q,$(N_VOC))) \
	  $(if $(filter 1 yes true,$(VOC_DOWNLOAD)),--voc-download) \
	  $(if $(filter 1 yes true,$(DRY_RUN)),--dry-run) \
	  $(if $(ENGINE),--engine $(call q,$(ENGINE))) \
	  --jb-flags $(call q,$(JB_FLAGS))

# GPU timings of every part and the full run projected from them; on a CPU (CPU figures):
#   make bench-gpu DEVICE=cpu BENCH_GPU_FLAGS='--images 2'
bench-gpu: setup
	$(PY) -m scripts.bench_gpu --device $(call q,$(DEVICE)) \
	  $(if $(VOC_ROOT),--voc-root $(call q,$(VOC_ROOT))) \
	  $(BENCH_GPU_FLAGS)

# Re-run committed executed notebooks and compare the outputs of the cells marked
# `# NBVAL_CHECK_OUTPUT`. `make nbval` (part of `make test`): the smoke-profile copies in
# tests/nbval/ (written by `make smoke-notebooks`), seconds each. `make nbval-book`: the
# book's notebooks in book/, under the profile they were executed with (imagenet-sample:
# its photos in data/downloads/imagenet-sample or $$IMAGENET_SAMPLE; minutes, as its rows
# are committed; offline: 4 minutes on 2 cores with data/results/offline, 12 from scratch).
NBVAL_DIR ?= tests/nbval
nbval: setup
	@shopt -s nullglob; executed=($(NBVAL_DIR)/*.ipynb); \
	if (( $${#executed[@]} )); then \
	  echo "$(VENV)/bin/pytest -q --nbval-lax --nbval-current-env $${executed[*]}"; \
	  $(VENV)/bin/pytest -q --nbval-lax --nbval-current-env "$${executed[@]}"; \
	else echo "nbval: no executed notebooks in $(NBVAL_DIR)/"; fi

nbval-book:
	@$(MAKE) --no-print-directory nbval NBVAL_DIR=book

# The smoke-profile executed copies that `make nbval` checks: notebooks/NN_*.ipynb ->
# tests/nbval/NN_*.ipynb with `-p profile smoke` (commit them after a change).
smoke-notebooks:
	@$(MAKE) --no-print-directory notebooks PROFILE=smoke NOTEBOOK_DIR=tests/nbval

# The published book: _build/html from the executed notebooks committed in book/. Executes
# nothing and needs neither photos nor weights (minutes on a fresh clone, MathJax included).
# To execute first: `make notebooks [PROFILE=…]`, then `make book`.
book: setup mathjax
	$(JB) build . $(JB_FLAGS)

# The same build, under the name the workflow and older notes use.
book-html: book

# The README's teaser and Table I/II summary (between its summary markers) and book/teaser.png,
# from the executed book/08_summary.ipynb (scripts/readme.py).
readme: setup
	$(PY) -m scripts.readme readme

# Scan the built book (_build/html) for what a reader must not see: plumbing, raw LaTeX,
# machine paths, figure text under 9 px (tests/test_book_html.py; CI runs it after building).
check-book: setup
	@test -f _build/html/index.html || { echo "check-book: no _build/html; run make book first"; exit 2; }
	$(VENV)/bin/pytest -q tests/test_book_html.py

# Execute every notebooks/NN_*.ipynb through papermill (scripts/notebooks.py) with
# `-p profile $(PROFILE)` and NB_PARAMS (e.g. NB_PARAMS='-p device cuda'), into
# $(NOTEBOOK_DIR)/ (default book/), also the working directory (where nbval re-runs them);
# into book/, the README's summary is refreshed from them. A bad parameter stops before
# anything runs, or in the cell after the parameters, with one line; a failed notebook leaves
# its executed copy as it was (partial output: a temporary folder, or
# $$FDCAM_PAPERMILL_SCRATCH). An executed notebook of another profile (the published book's)
# is replaced only with REPLACE=1.
NOTEBOOK_DIR ?= book
NB_PARAMS ?=
REPLACE ?=
notebooks: setup
	$(PY) -m scripts.notebooks --into $(call q,$(NOTEBOOK_DIR)) -p profile $(call q,$(PROFILE)) \
	  $(if $(filter 1,$(REPLACE)),--replace) $(NB_PARAMS)
	$(if $(filter book,$(NOTEBOOK_DIR)),@$(MAKE) --no-print-directory readme)

# MathJax 3 for reading offline (the version sphinx-book-theme's CSS is written for): the npm
# package, fetched once with `npm pack` into data/cache/ (git-ignored; checked against its
# SHA-256), its es5/ build unpacked into _build/mathjax/mathjax, which _config.yml adds to
# html_static_path. Only the TeX-to-CommonHTML component, its fonts, TeX extensions and the
# menu are kept (5 MB of the 24 MB).
mathjax: setup $(MATHJAX)

$(MATHJAX_TARBALL):
	mkdir -p $(dir $@)
	cd $(dir $@) && npm pack --silent mathjax@$(MATHJAX_VERSION) > /dev/null
	echo '$(MATHJAX_SHA256)  $@' | sha256sum --check --quiet

MATHJAX_DIR := $(patsubst %/,%,$(dir $(MATHJAX)))
MATHJAX_UNPACKED := $(MATHJAX_DIR).unpacked
$(MATHJAX): $(MATHJAX_TARBALL)
	echo '$(MATHJAX_SHA256)  $<' | sha256sum --check --quiet
	rm -rf $(MATHJAX_DIR) $(MATHJAX_UNPACKED)
	mkdir -p $(MATHJAX_UNPACKED) $(MATHJAX_DIR)/output
	tar -xzf $< -C $(MATHJAX_UNPACKED)
	cd $(MATHJAX_UNPACKED)/package/es5 && cp -R $(notdir $(MATHJAX)) input ui a11y adaptors \
	  $(abspath $(MATHJAX_DIR))/
	cp -R $(MATHJAX_UNPACKED)/package/es5/output/chtml $(MATHJAX_DIR)/output/
	cp $(MATHJAX_UNPACKED)/package/LICENSE $(MATHJAX_DIR)/
	rm -rf $(MATHJAX_UNPACKED)
	touch $@

# The imagenet-sample profile's photos: one per ImageNet-1k class from the public repository
# EliSchwartz/imagenet-sample-images (about 110 MB; git-ignored, never committed).
#   make data-imagenet-sample           shallow clone into data/downloads/imagenet-sample
#   IMAGENET_SAMPLE=DIR                 photos elsewhere: clone there, or read from there
# fdcam.evaluation.imagenet.ImageNetSample reads $$IMAGENET_SAMPLE (absolute here, so notebooks
# find it).
IMAGENET_SAMPLE ?= data/downloads/imagenet-sample
export IMAGENET_SAMPLE := $(abspath $(IMAGENET_SAMPLE))
.PHONY: data-imagenet-sample
data-imagenet-sample:
	@if compgen -G '$(IMAGENET_SAMPLE)/n*_*.JPEG' > /dev/null; then \
	  echo "imagenet-sample photos already in $(IMAGENET_SAMPLE)"; \
	else \
	  mkdir -p '$(dir $(IMAGENET_SAMPLE))' && \
	  git clone --depth 1 https://github.com/EliSchwartz/imagenet-sample-images \
	    '$(IMAGENET_SAMPLE)'; \
	fi

clean:
	rm -rf _build .pytest_cache .ruff_cache

# The imagenet-sample evaluation (book/reproduce.md), resumable across sessions:
#   make evaluate-imagenet-sample [IMAGENET_SAMPLE=DIR] [THREADS=1] [DEVICE=cpu] [STAGES=1,3,5,6,2]
#                                 [METHODS='gradcam*,scorecam']   (default: every method)
#                                 [RECOMPUTE='fdcam*']   (delete these rows first, remake them)
THREADS ?= 1
STAGES ?= 1,3,5,6,2
METHODS ?= *
.PHONY: evaluate-imagenet-sample
evaluate-imagenet-sample: setup
	OMP_NUM_THREADS=$(THREADS) $(PY) -m scripts.sample_evaluation --threads $(THREADS) \
	  --device $(call q,$(if $(filter auto,$(DEVICE)),cpu,$(DEVICE))) --stages $(call q,$(STAGES)) \
	  --methods $(call q,$(METHODS)) $(if $(RECOMPUTE),--recompute $(call q,$(RECOMPUTE))) \
	  $(if $(IMAGENET_SAMPLE),--photos $(call q,$(IMAGENET_SAMPLE))) \
	  $(if $(ENGINE),--engine $(call q,$(ENGINE)))
