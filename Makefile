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

# install: `make install DESTDIR=/some/root [PYTHON=/usr/bin/python3] [FORCE=1]`
DESTDIR ?=
SM_DIR := /opt/xensource/sm
BIN_DIR ?= /usr/local/bin
# Where PYTHON finds pure-Python packages (Debian: /usr/local/lib/python3.X/dist-packages).
PYLIB = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')

# The dom0 tier (`make test-dom0`): the drivers run on CPython 3.6 (dom0's
# interpreter) in .venv36, which holds only what dom0 has (XenAPI, no lxml)
# and the checkout; pytest itself runs on .venv. PY36= names the interpreter when
# .ci/find-python36 (pyenv's versions/3.6.*, python3.6 on PATH) finds none.
PY36 ?= $(shell .ci/find-python36)
VENV36 := .venv36
STAMP36 := $(VENV36)/.installed
DOM0_TESTS ?= tests/framework tests/filesr tests/lvm tests/toolstack

.PHONY: demo test test-dom0 lint bench install uninstall rpm venv clean

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

$(STAMP36): setup.cfg
	@test -n "$(PY36)" || { echo "no CPython 3.6 found (pyenv versions/3.6.*, python3.6 on" \
	  "PATH): install one or pass PY36=/path/to/python3.6" >&2; exit 1; }
	rm -rf $(VENV36) && $(PY36) -m venv $(VENV36)
	$(VENV36)/bin/python -m pip install -q XenAPI
	# The checkout on its path, as .venv has it installed editable (a driver
	# run through a symlink finds no checkout beside it).
	$(VENV36)/bin/python -c 'import site, sys; open(site.getsitepackages()[0] + \
	  "/smlib-checkout.pth", "w").write(sys.argv[1] + "\n")' "$(CURDIR)"
	touch $(STAMP36)

# SMLIB_DRIVER_BIN: the harness and the toolstack put that directory first on
# the drivers' PATH, so `#!/usr/bin/env python3` is the 3.6 interpreter.
test-dom0: $(STAMP) $(STAMP36)
	SMLIB_DRIVER_BIN="$(CURDIR)/$(VENV36)/bin" $(RUN) -m pytest -q $(PYTEST_ARGS) $(DOM0_TESTS); \
	  status=$$?; if [ $$status -eq 5 ]; then echo "no tests selected"; status=0; fi; exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check smlib tests bench drivers/*SR

bench: $(STAMP)
	$(RUN) -m bench

# Copies rather than pip: no build step, no network, no PEP 668 refusal on a
# distribution's interpreter. The drivers go in through tools/sm-drivers,
# which refuses to replace a <Type>SR smlib did not install (the host's own
# storage manager's) unless FORCE=1, which keeps it as <Type>SR.orig.
install:
	sh tools/sm-drivers install drivers "$(DESTDIR)$(SM_DIR)" $(if $(filter 1,$(FORCE)),force)
	install -d "$(DESTDIR)$(BIN_DIR)"
	cd smlib && find . \( -name '*.py' -o -name XE_SR_ERRORCODES.xml \) -print | \
	  while read -r f; do install -D -m 0644 "$$f" "$(DESTDIR)$(PYLIB)/smlib/$$f"; done
	$(PYTHON) -m compileall -q -d "$(PYLIB)/smlib" "$(DESTDIR)$(PYLIB)/smlib"
	printf '%s\n' '#!/usr/bin/env python3' 'import sys' 'from smlib.toolstack.cli import main' \
	  'sys.exit(main())' > "$(DESTDIR)$(BIN_DIR)/smctl"
	chmod 0755 "$(DESTDIR)$(BIN_DIR)/smctl"

# Takes out what install put in and puts back each <Type>SR.orig.
uninstall:
	sh tools/sm-drivers uninstall drivers "$(DESTDIR)$(SM_DIR)"
	rm -rf "$(DESTDIR)$(PYLIB)/smlib"
	if grep -qs 'smlib.toolstack.cli' "$(DESTDIR)$(BIN_DIR)/smctl"; then \
	  rm -f "$(DESTDIR)$(BIN_DIR)/smctl"; fi

# The RPM (rpm/smlib.spec) from this tree's files: rpmbuild (Debian: rpm)
# and a CPython 3.6 to byte-compile for dom0. Result: dist/smlib-*.noarch.rpm;
# the version is smlib.__version__.
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' smlib/__init__.py)
RPM_TOP ?= $(CURDIR)/build/rpm
DIST ?= dist
rpm:
	@test -n "$(PY36)" || { echo "make rpm needs a CPython 3.6 (PY36=...)" >&2; exit 1; }
	rm -rf "$(RPM_TOP)" && mkdir -p "$(RPM_TOP)/SOURCES" "$(DIST)"
	find drivers smlib tools rpm README.md -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | \
	  LC_ALL=C sort | tar -cz -T - --transform 's,^,smlib-$(VERSION)/,' \
	    -f "$(RPM_TOP)/SOURCES/smlib-$(VERSION).tar.gz"
	rpmbuild -bb --quiet --define "_topdir $(RPM_TOP)" --define "version $(VERSION)" \
	  --define "py36 $(PY36)" rpm/smlib.spec
	cp "$(RPM_TOP)"/RPMS/noarch/smlib-$(VERSION)-*.noarch.rpm "$(DIST)/"

clean:
	rm -rf $(VENV) $(VENV36) build dist *.egg-info .pytest_cache .hypothesis
