# Two commands do everything: `make demo` and `make test`. Each sets up .venv first if needed.
# `make demo` installs only what the demo needs; `make test` adds the test tools and Debian's Chromium.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that installs from this machine's disk; never torchvision/torchaudio.
TORCH := torch==2.13.0
# Everything runs as if the venv were activated: its bin/ holds asrflow, mlflow, uvicorn and the ffmpeg
# that stock transformers code runs (MLflow's transformers flavor given audio bytes).
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup setup-test setup-docs demo test check test-floors lint docs docs-build bench screenshot clean

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[tiny]' $(TORCH)
	@# a static ffmpeg from PyPI (imageio-ffmpeg), named `ffmpeg` in the venv's bin/ where transformers looks for it
	ln -sf "$$($(BIN)/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" $(BIN)/ffmpeg
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]' $(TORCH)
	@# the browser test drives Debian's Chromium (never a downloaded browser); apt needs root
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $@

demo: setup
	asrflow demo

# The documentation site (mkdocs.yml, docs/): its CLI reference, error messages and performance tables are generated
# when it is built (tools/mkdocs_hooks.py). `make docs-build` is CI's strict build; `make docs` builds, then serves.
setup-docs: $(VENV)/.installed-docs
$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[docs]' $(TORCH)
	touch $@

docs-build: setup-docs
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict -q

docs: docs-build
	NO_MKDOCS_2_WARNING=1 mkdocs serve -a 127.0.0.1:8001 --no-livereload

# the quick tier for the edit loop: options, writers, transcripts, audio, limits, scoring, one transcription per backend
# its models' conversions are kept in build/check-home between runs (make test starts from nothing, as CI does)
check: setup-test
	ASRFLOW_TEST_HOME=$(CURDIR)/build/check-home python -m pytest -q -m check $(PYTEST_ARGS)

# The quick tier on the oldest releases pyproject allows (floors.txt pins each floor), in a venv of its own, with
# its own model conversions (build/floors-home): the floors are versions the code was run on, not guesses.
FLOORS := .venv-floors
test-floors:
	test -x $(FLOORS)/bin/python || $(PY) -m venv $(FLOORS)
	$(FLOORS)/bin/pip install -q --upgrade pip
	$(FLOORS)/bin/pip install -q $(TORCH)
	$(FLOORS)/bin/pip install -q -c floors.txt -e '.[test]' $(TORCH)
	ln -sf "$$($(FLOORS)/bin/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" $(FLOORS)/bin/ffmpeg
	PATH="$(CURDIR)/$(FLOORS)/bin:$$PATH" ASRFLOW_TEST_HOME=$(CURDIR)/build/floors-home \
		$(FLOORS)/bin/python -m pytest -q -m check -p no:cacheprovider $(PYTEST_ARGS)

lint: setup-test
	ruff check .
	ruff format --check .

# a worker per core and one more, at most 8 (pytest-xdist; each loads the models), each computing on one thread
# (tests/conftest.py): tests that wait (on a server process starting, a browser, a socket) leave their core to the
# extra. Then the tests marked `alone` (wall-clock bounds that others' load would break), by themselves, a file to a
# process (an in-process server's work left by one must not load the next: the hostile test's long requests did); both
# runs use the same converted models (ASRFLOW_TEST_MODELS). A PYTEST_ARGS that selects no `alone` test is no failure
# (pytest's exit status 5: nothing collected).
test: setup-test
	status=0; export ASRFLOW_TEST_MODELS=$$(mktemp -d); trap 'rm -rf "$$ASRFLOW_TEST_MODELS"' EXIT; \
	python -m pytest -q -n $$(( $$(nproc) < 8 ? $$(nproc) + 1 : 8 )) --dist worksteal -m "not alone" --durations=10 \
		$(PYTEST_ARGS) || status=$$?; \
	for file in $$(grep -l 'mark.alone' tests/test_*.py); do \
		python -m pytest -q -m alone $$file $(PYTEST_ARGS) || { code=$$?; [ $$code -eq 5 ] || status=$$code; }; \
	done; \
	exit $$status

# Refreshes docs/page.png from the browser test (tests write their screenshots under build/, ignored).
screenshot: setup-test
	python -m pytest -q tests/test_page.py
	cp build/screenshots/page.png docs/page.png

bench: setup-test
	@# the held-out corpus is spoken at bench time (bench/heldout.py) with Debian's espeak-ng and sox; apt needs root
	command -v espeak-ng >/dev/null && command -v sox >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng sox)
	python bench/run.py | tee bench/results/bench.txt
	python bench/longform.py | tee bench/results/longform.txt
	python bench/load.py | tee bench/results/load.txt
	python bench/memory.py | tee bench/results/memory.txt
	python bench/speakers.py | tee bench/results/speakers.txt
	python bench/languages.py | tee bench/results/languages.txt
	python bench/realtime.py | tee bench/results/realtime.txt
	python bench/timestamps.py | tee bench/results/timestamps.txt
	python bench/schema.py | tee bench/results/schema.txt

clean:
	rm -rf $(VENV) $(FLOORS) .pytest_cache build
