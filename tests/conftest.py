"""Shared fixtures: a CloudStack simulator on loopback, a throwaway HOME, keys, configs, sshd."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from cloudstack_sim import CLOUDSTACK_VERSIONS, DEFAULT_API_KEY, DEFAULT_SECRET_KEY, Simulator
from tests import sshd_support
from tests.configs import base_sections, render, write_config

SSH_SCALE = shutil.which("ssh_scale.py", path=os.path.dirname(sys.executable)) or "ssh_scale.py"
SECRETS = (DEFAULT_API_KEY, DEFAULT_SECRET_KEY)
__all__ = ["SSH_SCALE", "assert_no_secrets", "base_sections", "render", "run_cli",
           "write_config"]


def pytest_configure(config: pytest.Config) -> None:
    """A test run started in the background (cron, nohup, `make test &`) inherits SIGINT
    ignored, and so would every command the tests start: the Ctrl-C tests need it delivered.
    A handler set here becomes the default action in the commands (exec resets it)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def sim() -> Any:
    """A started simulator with fast jobs, speaking as a 4.19 server; on 127.0.0.1."""
    with Simulator(job_seconds=0.05) as simulator:
        yield simulator


#: The server versions `any_sim` runs a test against: a pair that differs in what matters to
#: most tests (4.15 writes events without resourceid, 4.19 with it) and keeps the suite's time.
REPRESENTATIVE_VERSIONS = ("4.15", "4.19")


def _version_ids(versions: tuple[str, ...]) -> list[str]:
    return [f"cs{version}" for version in versions]


#: For a test of a module that runs against `any_sim` but checks what no server version
#: changes (the client's retries, SSH keys, what a run prints): one version is enough.
NEWEST_ONLY = pytest.mark.parametrize("any_sim", REPRESENTATIVE_VERSIONS[-1:],
                                      ids=_version_ids(REPRESENTATIVE_VERSIONS[-1:]),
                                      indirect=True)


@pytest.fixture(params=REPRESENTATIVE_VERSIONS, ids=_version_ids(REPRESENTATIVE_VERSIONS))
def any_sim(request: pytest.FixtureRequest) -> Any:
    """The simulator speaking as each of REPRESENTATIVE_VERSIONS in turn: for tests that must
    hold on old and new servers alike and are too slow to run five times (end-to-end runs);
    test modules use it as their `sim`."""
    with Simulator(job_seconds=0.05, cloudstack=request.param) as simulator:
        yield simulator


@pytest.fixture(params=CLOUDSTACK_VERSIONS, ids=_version_ids(CLOUDSTACK_VERSIONS))
def every_sim(request: pytest.FixtureRequest) -> Any:
    """The simulator speaking as every server version it knows in turn (4.5 to 4.19, see
    cloudstack_sim.versions): for what must hold whatever a server says when a tag job fails
    (the lease, the facts, drain marks, the backoff) and for each version's own wording. Runs a
    test once per version: keep the tests that use it few and quick."""
    with Simulator(job_seconds=0.05, cloudstack=request.param) as simulator:
        yield simulator


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME (with ~/.ssh) so nothing reads or writes the real user's files."""
    directory = tmp_path / "home"
    (directory / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(directory))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)  # the run journal goes under HOME
    monkeypatch.delenv("IDCFRC", raising=False)
    for name in ("CLOUDSTACK_ENDPOINT", "CLOUDSTACK_KEY", "CLOUDSTACK_SECRET",
                 "IDCF_COMPUTE_HOST", "IDCF_COMPUTE_API_KEY", "IDCF_COMPUTE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    return directory


@pytest.fixture
def key(home: Path) -> Path:
    """An unencrypted Ed25519 key in ~/.ssh."""
    return sshd_support.make_key(home / ".ssh", "id_ed25519")


@pytest.fixture
def sshd(tmp_path: Path, key: Path) -> Any:
    """The real OpenSSH sshd on 127.0.0.1, accepting `key`; skipped without sshd (not in CI)."""
    sshd_support.require_sshd()
    with sshd_support.OpenSSHServer(tmp_path / "sshd", authorized_keys=[key]) as server:
        yield server


def run_cli(*args: str, env: Optional[dict[str, str]] = None, timeout: float = 60,
            **kwargs: Any) -> subprocess.CompletedProcess:
    """Run the installed ssh_scale.py command; returns the finished process."""
    return subprocess.run([SSH_SCALE, *args], capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=timeout, **kwargs)


def assert_no_secrets(*texts: str, extra: tuple[str, ...] = ()) -> None:
    """No API key, secret, passphrase or signature anywhere in the given output."""
    for text in texts:
        for secret in SECRETS + extra:
            assert secret not in text
        assert "signature=" not in text.lower().replace("signature=***", "")

