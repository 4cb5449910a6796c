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
KERNEL := python3
export JUPYTER_PREFER_ENV_PATH := 1
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
MATHJAX := _build/mathjax/mathjax/MathJax.js

.PHONY: setup test lint bench book book-html notebooks nbval mathjax clean

setup: $(STAMP)

# Idempotent: reinstalls only when the pins in pyproject.toml change.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check fdcam tests

test: setup lint
	$(VENV)/bin/pytest -q
	@$(MAKE) --no-print-directory nbval

bench: setup
	$(PY) -m fdcam.bench

# Re-run the committed executed notebooks (book/*.ipynb) and compare the outputs of the
# cells marked `# NBVAL_CHECK_OUTPUT`; nothing to do while there are none.
nbval: setup
	@shopt -s nullglob; executed=(book/*.ipynb); \
	if (( $${#executed[@]} )); then \
	  echo "$(VENV)/bin/pytest -q --nbval-lax --nbval-current-env $${executed[*]}"; \
	  $(VENV)/bin/pytest -q --nbval-lax --nbval-current-env "$${executed[@]}"; \
	else echo "nbval: no executed notebooks in book/"; fi

# Execute every notebooks/NN_*.ipynb into book/ with the chosen profile, then build the HTML.
book: notebooks mathjax
	$(JB) build . $(JB_FLAGS)

# Build the HTML from the executed notebooks as they are in book/; executes nothing.
book-html: setup mathjax
	$(JB) build . $(JB_FLAGS)

# Only execute: papermill, `-p profile $(PROFILE)`, in book/ as working directory (where
# nbval will re-run them). An unknown profile stops here, with one line. A notebook that
# fails leaves book/ as it was; its partial output goes to _build/papermill for reading.
notebooks: setup
	@$(PY) -m fdcam.report check-profile '$(PROFILE)'
	@mkdir -p _build/papermill
	@set -e; for source in $(NOTEBOOKS); do \
	  name=$$(basename "$$source"); target="book/$$name"; kept="_build/papermill/$$name.kept"; \
	  echo "papermill $$source -> $$target (profile $(PROFILE))"; \
	  rm -f "$$kept"; if [[ -f "$$target" ]]; then cp "$$target" "$$kept"; fi; \
	  if ! $(VENV)/bin/papermill "$$source" "$$target" -p profile '$(PROFILE)' -k $(KERNEL) \
	      --cwd book --no-progress-bar --log-level WARNING; then \
	    if [[ -f "$$target" ]]; then mv "$$target" "_build/papermill/$$name"; fi; \
	    if [[ -f "$$kept" ]]; then mv "$$kept" "$$target"; fi; \
	    echo "error: $$source failed; its output is in _build/papermill/$$name" >&2; exit 1; \
	  fi; \
	  rm -f "$$kept"; \
	done

# MathJax 2.7 for reading offline, from the jupyter-server-mathjax package (a dev
# dependency); _config.yml adds _build/mathjax to html_static_path. The package has no SVG
# output code, so its SVG fonts are left out.
mathjax: setup $(MATHJAX)

$(MATHJAX): $(STAMP)
	rm -rf _build/mathjax
	mkdir -p _build/mathjax
	package=$$($(PY) -c 'import jupyter_server_mathjax as m, os; print(os.path.dirname(m.__file__))') \
	  && cp -R "$$package/static" _build/mathjax/mathjax
	rm -rf _build/mathjax/mathjax/jax/output/SVG
	touch $@

clean:
	rm -rf _build .pytest_cache .ruff_cache
