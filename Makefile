# On a fresh machine:  make demo,  make trial  (an offline trial of your own config: see
# README "Try it offline")  and  make test.
# Each creates .venv and installs what it needs; make test also installs openssh-server (the
# end-to-end tests' real sshd) and rpm (rpmbuild, to check the rpm) when they are missing and
# this user can install them.

VENV    ?= .venv
PYTHON  ?= python3
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.installed-stamp
APT_ENV  = DEBIAN_FRONTEND=noninteractive
DIST    ?= dist
SUDO     = $(shell [ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n")

.PHONY: demo trial test lint tools bench clean deb rpm

$(STAMP): setup.py sshscale/__init__.py
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 venv support is missing; installing python3-venv"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env $(APT_ENV) apt-get install -y -qq python3-venv; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/pip install -q -e '.[test,plot]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m sshscale.demo

# The simulator, its VMs answering SSH, and trial.idcfrc for them; Ctrl-C stops it.
trial: $(STAMP)
	$(BIN)/cloudstack-sim --ssh --write-config trial.idcfrc

tools:
	@missing=""; \
	command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v rpmbuild >/dev/null 2>&1 || missing="$$missing rpm"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  echo "installing$$missing (a real sshd for the end-to-end tests, rpmbuild for the rpm's)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env $(APT_ENV) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "note:$$missing missing and not installable here; their tests are skipped (sshd's fail when CI=true)"; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/vermin -q -t=3.9- --no-tips --violations --exclude-regex '^\.venv' *.py sshscale cloudstack_sim tests bench examples
	$(BIN)/lint-imports --no-cache

test: $(STAMP) tools lint
	$(BIN)/pytest -q -n 6

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# Packages like the 2013 tool's: dist/ssh-scale_<version>-1_all.deb (dpkg-deb alone) and
# dist/ssh-scale-<version>-1.noarch.rpm (contrib/rpm/ssh-scale.spec). Neither needs .venv.
deb:
	@command -v dpkg-deb >/dev/null 2>&1 || { \
	  echo "make deb needs dpkg-deb (Debian/Ubuntu: apt-get install dpkg)"; exit 1; }
	packaging/build-deb $(DIST)

rpm:
	@command -v rpmbuild >/dev/null 2>&1 || { echo "make rpm needs rpmbuild, which is missing:" \
	  "dnf install rpm-build (EL, Fedora) or apt-get install rpm (Debian, Ubuntu)"; exit 1; }
	packaging/build-rpm $(DIST)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .hypothesis
