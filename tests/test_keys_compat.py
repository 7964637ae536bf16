"""The paramiko and requests that distributions ship: load_private_key says the same for the
same key file on paramiko 2.9 to today's (PKey.from_path or, before 3.2, the key classes), and
a whole live run works on each stack (its own venv, built once per test venv from PyPI).

With CI=true a stack that cannot be built fails the test instead of skipping it."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import paramiko
import pytest

from sshscale.errors import SshError
from sshscale.measure import load_private_key
from tests import sshd_support
from tests.conftest import base_sections, write_config

ROOT = Path(__file__).resolve().parent.parent
PIP_SECONDS = 600
RUN_SECONDS = 120

# Pinned like the distribution packages (their cryptography too: paramiko 2.x cannot decrypt
# PEM keys with today's cryptography).
STACKS = {
    # the oldest paramiko the code supports: rsa-sha2 signatures, which OpenSSH >= 8.8 requires
    # for RSA keys, came in 2.9; SSHConfig.from_path and OpenSSH-format RSA keys in 2.7.
    # requests 2.20 is setup.py's floor.
    "paramiko-2.9.0": ("paramiko==2.9.0", "cryptography==36.0.2", "bcrypt==3.2.0",
                       "pynacl==1.5.0", "requests==2.20.0"),
    # Debian 12: python3-paramiko 2.12.0, python3-requests 2.28.1 and their dependencies
    "debian-12": ("paramiko==2.12.0", "cryptography==38.0.4", "bcrypt==3.2.2", "pynacl==1.5.0",
                  "requests==2.28.1", "urllib3==1.26.12", "idna==3.3"),
    # the first PKey.from_path, whose parameter was still called passphrase
    "paramiko-3.2.0": ("paramiko==3.2.0", "cryptography==41.0.3", "bcrypt==4.0.1",
                       "pynacl==1.5.0", "requests==2.31.0"),
}

ENCRYPTED = "the key is encrypted; set [monitoring] pass_phrase"
WRONG = "cannot load the private key (...; wrong [monitoring] pass_phrase?)"
NOT_A_KEY = "cannot load the private key (...; not a private key?)"

# name: (key type or None, format, the key's passphrase, pass_phrase given, outcome)
KEY_CASES = {
    "rsa-pem": ("rsa", "pem", "", "", "ssh-rsa"),
    "rsa-pem-enc": ("rsa", "pem", "right-1", "right-1", "ssh-rsa"),
    "rsa-pem-enc-none": ("rsa", "pem", "right-1", "", ENCRYPTED),
    "rsa-pem-enc-wrong": ("rsa", "pem", "right-1", "wrong-1", WRONG),
    "rsa-openssh-enc": ("rsa", "openssh", "right-1", "right-1", "ssh-rsa"),
    "rsa-openssh-enc-none": ("rsa", "openssh", "right-1", "", ENCRYPTED),
    "rsa-openssh-enc-wrong": ("rsa", "openssh", "right-1", "wrong-1", WRONG),
    "ecdsa-openssh": ("ecdsa", "openssh", "", "", "ecdsa-sha2-nistp256"),
    "ecdsa-pem-enc": ("ecdsa", "pem", "right-1", "right-1", "ecdsa-sha2-nistp256"),
    "ecdsa-pem-enc-none": ("ecdsa", "pem", "right-1", "", ENCRYPTED),
    "ecdsa-pem-enc-wrong": ("ecdsa", "pem", "right-1", "wrong-1", WRONG),
    "ed25519": ("ed25519", "openssh", "", "", "ssh-ed25519"),
    "ed25519-spare-phrase": ("ed25519", "openssh", "", "spare-1", "ssh-ed25519"),
    "rsa-pem-spare-phrase": ("rsa", "pem", "", "spare-1", "ssh-rsa"),
    "ed25519-enc": ("ed25519", "openssh", "right-1", "right-1", "ssh-ed25519"),
    "ed25519-enc-none": ("ed25519", "openssh", "right-1", "", ENCRYPTED),
    "ed25519-enc-wrong": ("ed25519", "openssh", "right-1", "wrong-1", WRONG),
    "text-file": (None, "text", "", "", NOT_A_KEY),
    "public-key": (None, "pub", "", "", NOT_A_KEY),
    "missing": (None, "missing", "", "", "No such file or directory"),
    "directory": (None, "directory", "", "", "Is a directory"),
}

# Run in a stack's venv: argv[1] is a JSON list of [path, pass_phrase]; prints the outcomes.
LOAD_KEYS = """
import json, sys, warnings
warnings.simplefilter("ignore")
from sshscale.errors import SshError
from sshscale.measure import load_private_key
outcomes = []
for path, phrase in json.loads(sys.argv[1]):
    try:
        outcomes.append(load_private_key(path, phrase).get_name())
    except SshError as exc:
        outcomes.append(str(exc))
import paramiko, requests
print(json.dumps({"outcomes": outcomes, "paramiko": paramiko.__version__,
                  "requests": requests.__version__}))
"""


def outcome(text: str, path: Path) -> str:
    """A key's name, or the message without its path and paramiko's own detail."""
    text = text.replace(f"{path}: ", "", 1)
    return re.sub(r"\(.*; ", "(...; ", text, flags=re.DOTALL)


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Every case's file (made by ssh-keygen) and the pass_phrase the config gives."""
    if not os.access(sshd_support.SSH_KEYGEN, os.X_OK):
        pytest.skip(f"ssh-keygen not found at {sshd_support.SSH_KEYGEN} "
                    "(apt-get install openssh-client)")
    directory = tmp_path_factory.mktemp("keys")
    files = {}
    for name, (key_type, fmt, phrase, given, _) in KEY_CASES.items():
        path = directory / name
        if key_type:
            sshd_support.make_key(directory, name, key_type, phrase, fmt)
        elif fmt == "text":
            path.write_text("not a key\n")
        elif fmt == "pub":
            path = sshd_support.public_key_path(sshd_support.make_key(directory, name))
        elif fmt == "directory":
            path.mkdir()
        files[name] = (path, given)
    return files


def expected(name: str) -> str:
    return KEY_CASES[name][4]


@pytest.mark.parametrize("loader", ["from_path", "key classes"])
@pytest.mark.parametrize("name", sorted(KEY_CASES))
def test_load_private_key_outcome(key_files, monkeypatch, loader, name):
    if loader == "key classes":  # what paramiko < 3.2 has
        monkeypatch.delattr(paramiko.PKey, "from_path", raising=False)
    path, given = key_files[name]
    try:
        got = load_private_key(str(path), given).get_name()
    except SshError as exc:
        got = outcome(str(exc), path)
    assert got == expected(name)


def test_load_private_key_error_is_one_line_naming_the_file(key_files):
    path, given = key_files["rsa-pem-enc-wrong"]
    with pytest.raises(SshError) as caught:
        load_private_key(str(path), given)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value) and given not in str(caught.value)


# --- the stacks ---------------------------------------------------------------------------


def stack_python(name: str, base: Path) -> Path:
    """The stack's venv python, built once (a lock keeps parallel runs from racing); skips,
    or fails with CI=true, when pip cannot install the pins (offline)."""
    pins = STACKS[name]
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:10]
    venv = base / f"{name}-{digest}"
    python = venv / "bin" / "python"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / "ready").exists():
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, timeout=PIP_SECONDS)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", *pins],
                              capture_output=True, text=True, timeout=PIP_SECONDS)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
            reason = (f"cannot build the {name} venv ({' '.join(pins)}): "
                      f"{(errors or done.stderr.splitlines() or ['pip failed'])[-1]}")
            if os.environ.get("CI") == "true":
                pytest.fail(f"{reason}; CI=true requires it")
            pytest.skip(reason)
        (venv / "ready").touch()
    return python


@pytest.fixture(scope="module")
def stacks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kept inside the test venv (make clean removes it); a fresh temp dir without one."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "compat-stacks"
    return tmp_path_factory.mktemp("compat-stacks")


def run_in(python: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    return subprocess.run([str(python), *args], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=RUN_SECONDS, **kwargs)


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_stack_loads_keys_alike(stack, stacks_dir, key_files):
    python = stack_python(stack, stacks_dir)
    names = sorted(KEY_CASES)
    cases = [[str(key_files[n][0]), key_files[n][1]] for n in names]
    done = run_in(python, "-c", LOAD_KEYS, json.dumps(cases))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    wanted_paramiko = next(p for p in STACKS[stack] if p.startswith("paramiko=="))
    assert answer["paramiko"] == wanted_paramiko.split("==")[1]
    got = {n: outcome(text, key_files[n][0]) for n, text in zip(names, answer["outcomes"])}
    assert got == {n: expected(n) for n in names}


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_stack_live_run_scales_out(stack, stacks_dir, tmp_path, sim, home):
    """An encrypted RSA PEM key (rsa-sha2 signatures, PEM decryption) against the real sshd,
    the simulator over HTTP (requests), a scale-out and its jobs."""
    sshd_support.require_sshd()
    python = stack_python(stack, stacks_dir)
    key = sshd_support.make_key(home / ".ssh", "id_rsa", "rsa", "phrase-42", "pem")
    sim.add_vm("web1", ip="127.0.0.1")
    with sshd_support.OpenSSHServer(tmp_path / "sshd", authorized_keys=[key]) as server:
        server.set_output("4.20 3.10 2.00 3/200 999")
        sections = base_sections(sim, key, port=server.port)
        sections["monitoring"]["pass_phrase"] = "phrase-42"
        done = run_in(python, "-m", "ssh_scale", "-c",
                      str(write_config(tmp_path / "idcfrc", sections)))
    assert done.returncode == 0, done.stderr
    assert "now_la           : 4.20" in done.stdout
    assert "now vm count     : 2" in done.stdout
    assert len(sim.lb_members()) == 2
