# Two commands on a fresh machine:  make demo   and   make test
# Both create .venv and install what they need; make test also installs
# openssh-server when it is missing and this user can install it.

VENV    ?= .venv
PYTHON  ?= python3
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.installed-stamp
APT_ENV  = DEBIAN_FRONTEND=noninteractive
SUDO     = $(shell [ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n")

.PHONY: demo test lint sshd bench clean

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

sshd:
	@if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  echo "installing openssh-server (the end-to-end tests start a real sshd on loopback)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env $(APT_ENV) apt-get install -y -qq openssh-server >/dev/null; \
	else echo "note: sshd is missing and cannot be installed here; its tests will be skipped (they fail when CI=true)"; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/vermin -q -t=3.9- --no-tips --violations --exclude-regex '^\.venv' *.py sshscale cloudstack_sim tests bench examples
	$(BIN)/lint-imports --no-cache

test: $(STAMP) sshd lint
	$(BIN)/pytest -q -n 4

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .hypothesis
