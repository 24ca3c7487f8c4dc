# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean browser

# One resolver pass for everything (see pyproject.toml for why); torch==2.13.0 is pinned so
# pip takes the CPU build on disk instead of pulling CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline.demo --out demo_out

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests

# The HTML report test renders the page in a real headless Chromium (Debian's package). Install
# it when it is missing and apt-get is there; never fail here (the test then skips, saying why).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "chromium is not installed: the HTML report test will be skipped"

bench: $(STAMP)
	$(PY) bench/bench_curate.py

clean:
	rm -rf $(VENV) demo_out
