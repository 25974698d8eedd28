# Two commands do everything: `make demo` and `make test`. Each sets up .venv first if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned to the CPU build that installs from this machine's disk; never torchvision/torchaudio.
TORCH := torch==2.13.0

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# the browser test drives Debian's Chromium (never a downloaded browser); apt needs root
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo "no chromium: browser tests will be skipped"
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]' $(TORCH)
	touch $(STAMP)

demo: setup
	$(BIN)/asrflow demo

test: setup
	$(BIN)/python -m pytest -q -x --durations=10 $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run.py | tee bench/results/bench.txt
	$(BIN)/python bench/load.py | tee bench/results/load.txt

clean:
	rm -rf $(VENV) .pytest_cache
