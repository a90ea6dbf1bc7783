# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Both create (or refresh, when setup.cfg/pyproject.toml change) the virtual
# environment .venv and install the project into it, editable, with its
# test extra.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Drivers run as `#!/usr/bin/env python3`: the venv's bin first on PATH makes
# that the venv interpreter, as the tests expect.
RUN := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VPY)

# `make test TESTS=tests/framework PYTEST_ARGS='-m "not slow"'`
TESTS ?= tests
PYTEST_ARGS ?=

# install: `make install DESTDIR=/some/root [PYTHON=/usr/bin/python3]`
DESTDIR ?=
SM_DIR := /opt/xensource/sm
BIN_DIR ?= /usr/local/bin
# Where PYTHON finds pure-Python packages (Debian: /usr/local/lib/python3.X/dist-packages).
PYLIB = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')

.PHONY: demo test lint bench install venv clean

$(STAMP): setup.cfg pyproject.toml
	@$(VPY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); } \
	  || { echo "cannot create $(VENV) with $(PYTHON): install its venv module" \
	            "(Debian: apt-get install python3-venv)" >&2; exit 1; }
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(RUN) -m smlib.toolstack.demo

# pytest exits 5 when a selection holds no test: that is not a failure.
test: $(STAMP)
	$(RUN) -m pytest -q $(PYTEST_ARGS) $(TESTS); status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no tests selected"; status=0; fi; exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check smlib tests bench drivers/*SR

bench: $(STAMP)
	$(RUN) -m bench

# Copies rather than pip: no build step, no network, no PEP 668 refusal on a
# distribution's interpreter. lxml must be installed for PYTHON (python3-lxml).
install:
	install -d "$(DESTDIR)$(SM_DIR)" "$(DESTDIR)$(BIN_DIR)"
	for d in drivers/*SR; do install -m 0755 "$$d" "$(DESTDIR)$(SM_DIR)/"; done
	cd smlib && find . \( -name '*.py' -o -name XE_SR_ERRORCODES.xml \) -print | \
	  while read -r f; do install -D -m 0644 "$$f" "$(DESTDIR)$(PYLIB)/smlib/$$f"; done
	$(PYTHON) -m compileall -q -d "$(PYLIB)/smlib" "$(DESTDIR)$(PYLIB)/smlib"
	printf '%s\n' '#!/usr/bin/env python3' 'import sys' 'from smlib.toolstack.cli import main' \
	  'sys.exit(main())' > "$(DESTDIR)$(BIN_DIR)/smctl"
	chmod 0755 "$(DESTDIR)$(BIN_DIR)/smctl"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
