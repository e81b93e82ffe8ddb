# The two commands of the README: `make demo` and `make test`. Each creates .venv and
# installs the project into it (editable) the first time, from the lock of tested versions
# (constraints.txt), so a fresh machine gets the set the tests passed with.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := constraints.txt
STAMP  := $(VENV)/.mmalign-installed
export HF_HUB_OFFLINE := 1

.PHONY: install demo demo-all test bench bench-peers browser lock test-latest

$(STAMP): pyproject.toml setup.py $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[media,test]"
	touch $(STAMP)

install: $(STAMP)

# `mmalign demo`: the default set (minutes); demo-all: every task at its full settings
demo: $(STAMP)
	$(BIN)/mmalign demo --out runs/demo

demo-all: $(STAMP)
	$(BIN)/mmalign demo --task all --out runs/demo-all

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The report test renders HTML in headless Chromium (Debian's package); as root, install it.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	      || echo "chromium could not be installed: the report render test will skip"; \
	  else echo "chromium not installed (needs root): the report render test will skip"; fi; }

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# mmalign against TRL's DPOTrainer (tiny LLaVA) and against a naive and the physical-limit
# Diffusion-DPO step (tiny SDXL), on CPU: benchmarks/results/peers_*.json. TRL is in the
# `bench` extra (and in `test`, which installs it here).
bench-peers: $(STAMP)
	$(BIN)/python benchmarks/peers/vlm_trl.py
	$(BIN)/python benchmarks/peers/sdxl_naive.py

# Freeze a tested venv into the lock (default .venv; `make lock VENV=.venv-latest` adopts
# what `make test-latest` installed, after it passed).
lock:
	$(PYTHON) tools/lock.py --venv $(VENV) --out $(LOCK)

# The newest releases (torch held at the locally served 2.14.1) in .venv-latest, the test
# suite there, and runs/test-latest.json: versions, what differs from the lock, failures.
test-latest:
	$(PYTHON) tools/test_latest.py --venv .venv-latest --out runs/test-latest.json
