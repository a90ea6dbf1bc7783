# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DESTDIR ?=
SM_DIR := /opt/xensource/sm

.PHONY: demo test lint bench install venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VPY) -m smlib.toolstack.demo

test: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VPY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check smlib tests bench drivers/*SR

bench: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VPY) -m bench

install:
	$(PYTHON) -m pip install --no-deps --root "$(or $(DESTDIR),/)" .
	install -d "$(DESTDIR)$(SM_DIR)"
	for d in drivers/*SR; do install -m 0755 $$d "$(DESTDIR)$(SM_DIR)/"; done

clean:
	rm -rf $(VENV) build *.egg-info
