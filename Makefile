# On a fresh machine:  make demo,  make trial  (an offline trial of your own config: see
# README "Try it offline")  and  make test;  make help  lists every target.
# Each creates .venv and installs what it needs; make test also installs openssh-server (the
# end-to-end tests' real sshd) and rpm (rpmbuild, to check the rpm) when they are missing and
# this user can install them.
# A comment starting with '## ' after a target is its line in make help.

VENV    ?= .venv
PYTHON  ?= python3
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.installed-stamp
APT_ENV  = DEBIAN_FRONTEND=noninteractive
DIST    ?= dist
SUDO     = $(shell [ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n")
# The packages' man pages and completions are written from the commands' parsers, which
# import requests: .venv's Python when there is one, else python3 (python3-requests).
BUILD_PYTHON ?= $(shell [ -x $(BIN)/python ] && echo $(BIN)/python || echo $(PYTHON))

.PHONY: help demo trial test lint tools bench clean deb rpm dist

help:  ## this list
	@sed -n 's/^\([a-z]*\):.*## \(.*\)/\1\t\2/p' $(MAKEFILE_LIST) | \
	  awk -F '\t' '{ printf "make %-6s %s\n", $$1, $$2 }'

$(STAMP): setup.py sshscale/__init__.py
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 venv support is missing; installing python3-venv"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env $(APT_ENV) apt-get install -y -qq python3-venv; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/pip install -q -e '.[test,plot]'
	@touch $(STAMP)

demo: $(STAMP)  ## the autoscaler against the simulator and a local SSH server
	$(BIN)/python -m sshscale.demo

trial: $(STAMP)  ## the simulator, its VMs answering SSH, and trial.idcfrc; Ctrl-C stops it
	$(BIN)/cloudstack-sim --ssh --write-config trial.idcfrc

tools:  ## install sshd and rpmbuild for the tests, when missing and installable
	@missing=""; \
	command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v rpmbuild >/dev/null 2>&1 || missing="$$missing rpm"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  echo "installing$$missing (a real sshd for the end-to-end tests, rpmbuild for the rpm's)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env $(APT_ENV) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "note:$$missing missing and not installable here; their tests are skipped (sshd's fail when CI=true)"; fi

lint: $(STAMP)  ## ruff, vermin (Python 3.9) and the import-linter contracts
	$(BIN)/ruff check .
	$(BIN)/vermin -q -t=3.9- --no-tips --violations --exclude-regex '^\.venv' *.py sshscale cloudstack_sim tests bench examples packaging/clidoc.py
	$(BIN)/lint-imports --no-cache

test: $(STAMP) tools lint  ## lint, then the whole test suite (what CI runs)
	$(BIN)/pytest -q -n 6

bench: $(STAMP)  ## the benchmarks (BENCHMARKS.md)
	$(BIN)/python bench/run_all.py

# Packages like the 2013 tool's: dist/ssh-scale_<version>-1_all.deb (dpkg-deb alone) and
# dist/ssh-scale-<version>-1.noarch.rpm (contrib/rpm/ssh-scale.spec). Neither needs .venv, but
# BUILD_PYTHON must import requests.
BUILD_CHECK = $(BUILD_PYTHON) -c 'import requests' 2>/dev/null || { \
	  echo "make $@ writes the man pages with $(BUILD_PYTHON), which cannot import requests:" \
	    "apt-get install python3-requests (dnf install python3-requests), or" \
	    "make $@ BUILD_PYTHON=/path/to/a/python/with/requests"; exit 1; }

deb:  ## dist/ssh-scale_<version>-1_all.deb (Debian 12, Ubuntu)
	@command -v dpkg-deb >/dev/null 2>&1 || { \
	  echo "make deb needs dpkg-deb (Debian/Ubuntu: apt-get install dpkg)"; exit 1; }
	@$(BUILD_CHECK)
	PYTHON=$(BUILD_PYTHON) packaging/build-deb $(DIST)

rpm:  ## dist/ssh-scale-<version>-1.noarch.rpm (EL9)
	@command -v rpmbuild >/dev/null 2>&1 || { echo "make rpm needs rpmbuild, which is missing:" \
	  "dnf install rpm-build (EL, Fedora) or apt-get install rpm (Debian, Ubuntu)"; exit 1; }
	@$(BUILD_CHECK)
	PYTHON=$(BUILD_PYTHON) packaging/build-rpm $(DIST)

dist:  ## dist/ssh-scale-<version>.tar.gz, the source tarball (rpmbuild -ta builds from it)
	packaging/build-dist $(DIST)

clean:  ## remove .venv and the caches
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .hypothesis
