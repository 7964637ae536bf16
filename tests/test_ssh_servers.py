"""Tests of the SSH servers the other tests stand on: load_sshd.LoadServer (in-process, paramiko)
and sshd_support.OpenSSHServer (the real OpenSSH sshd), both on loopback addresses only."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Iterator, Union

import paramiko
import pytest

from load_sshd import LoadServer
from tests.sshd_support import (
    DEFAULT_OUTPUT,
    OpenSSHServer,
    current_user,
    make_key,
    require_sshd,
)

COMMAND = "cat /proc/loadavg"
LOAD_ADDRESSES = ("127.0.1.1", "127.0.1.2", "127.0.1.3")
SSHD_ADDRESSES = ("127.0.0.1", "127.0.0.2")
PASSPHRASE = "correct horse"


def echo(address: str, command: str) -> str:
    """The LoadServer callback of these tests: says who answered what."""
    return f"{address} ran {command}\n"


def run(address: str, port: int, key: paramiko.PKey, known_hosts: Path, *,
        username: str = "monitor", command: str = COMMAND) -> tuple[str, int]:
    """Exec `command` over SSH, trusting only `known_hosts`; return (stdout, exit status)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(address, port=port, username=username, pkey=key, timeout=10,
                       banner_timeout=10, auth_timeout=10, look_for_keys=False,
                       allow_agent=False)
        _, stdout, _ = client.exec_command(command, timeout=10)
        return stdout.read().decode(), stdout.channel.recv_exit_status()
    finally:
        client.close()


def write_known_hosts(path: Path, server: Union[LoadServer, OpenSSHServer]) -> Path:
    """Write a known_hosts file with the server's key for each of its addresses."""
    path.write_text("".join(server.known_hosts_line(a) + "\n" for a in server.addresses))
    return path


# --- LoadServer -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture
def load_server(client_key: paramiko.PKey) -> Iterator[LoadServer]:
    with LoadServer(echo, addresses=LOAD_ADDRESSES, authorized_keys=[client_key]) as server:
        yield server


def test_load_server_answers_each_address_on_one_port(
    load_server: LoadServer, client_key: paramiko.PKey, tmp_path: Path,
) -> None:
    known_hosts = write_known_hosts(tmp_path / "known_hosts", load_server)
    for address in LOAD_ADDRESSES:
        assert run(address, load_server.port, client_key, known_hosts) == (
            f"{address} ran {COMMAND}\n", 0)
    assert load_server.exec_count == {address: 1 for address in LOAD_ADDRESSES}


def test_load_server_exec_count_counts_every_exec(
    load_server: LoadServer, client_key: paramiko.PKey, tmp_path: Path,
) -> None:
    known_hosts = write_known_hosts(tmp_path / "known_hosts", load_server)
    for _ in range(3):
        run(LOAD_ADDRESSES[1], load_server.port, client_key, known_hosts, command="uptime")
    assert load_server.exec_count == {LOAD_ADDRESSES[0]: 0, LOAD_ADDRESSES[1]: 3,
                                      LOAD_ADDRESSES[2]: 0}


def test_load_server_rejects_unknown_key(load_server: LoadServer, tmp_path: Path) -> None:
    known_hosts = write_known_hosts(tmp_path / "known_hosts", load_server)
    stranger = paramiko.ECDSAKey.generate()
    with pytest.raises(paramiko.AuthenticationException):
        run(LOAD_ADDRESSES[0], load_server.port, stranger, known_hosts)
    assert load_server.exec_count[LOAD_ADDRESSES[0]] == 0


def test_load_server_username_restricts_login(client_key: paramiko.PKey, tmp_path: Path) -> None:
    with LoadServer(echo, authorized_keys=[client_key], username="monitor") as server:
        known_hosts = write_known_hosts(tmp_path / "known_hosts", server)
        assert run("127.0.0.1", server.port, client_key, known_hosts)[1] == 0
        with pytest.raises(paramiko.AuthenticationException):
            run("127.0.0.1", server.port, client_key, known_hosts, username="intruder")


def test_load_server_respond_error_gives_status_1(
    client_key: paramiko.PKey, tmp_path: Path,
) -> None:
    def broken(address: str, command: str) -> str:
        raise KeyError(address)

    with LoadServer(broken, authorized_keys=[client_key]) as server:
        known_hosts = write_known_hosts(tmp_path / "known_hosts", server)
        assert run("127.0.0.1", server.port, client_key, known_hosts) == ("", 1)


@pytest.mark.parametrize("address", ["10.0.0.1", "0.0.0.0", "::1", "localhost", "128.0.0.1"])
def test_load_server_rejects_non_loopback_address(address: str) -> None:
    with pytest.raises(ValueError, match="127"):
        LoadServer(echo, addresses=["127.0.0.1", address])


def test_load_server_known_hosts_line_formats(load_server: LoadServer) -> None:
    key = load_server.host_key
    assert load_server.known_hosts_line(LOAD_ADDRESSES[0]) == (
        f"[{LOAD_ADDRESSES[0]}]:{load_server.port} {key.get_name()} {key.get_base64()}")
    on_22 = LoadServer(echo, port=22, host_key=key)  # not started: nothing binds port 22
    assert on_22.known_hosts_line("127.0.0.1") == f"127.0.0.1 {key.get_name()} {key.get_base64()}"


def test_load_server_delay_slows_each_exec(client_key: paramiko.PKey, tmp_path: Path) -> None:
    with LoadServer(echo, authorized_keys=[client_key], delay=0.3) as server:
        known_hosts = write_known_hosts(tmp_path / "known_hosts", server)
        started = time.monotonic()
        run("127.0.0.1", server.port, client_key, known_hosts)
        assert time.monotonic() - started >= 0.25


def test_load_server_serves_slow_clients_in_parallel(
    client_key: paramiko.PKey, tmp_path: Path,
) -> None:
    addresses = [f"127.0.2.{n}" for n in range(1, 21)]
    outputs: dict[str, tuple[str, int]] = {}
    with LoadServer(echo, addresses=addresses, authorized_keys=[client_key], delay=0.5) as server:
        known_hosts = write_known_hosts(tmp_path / "known_hosts", server)

        def fetch(address: str) -> None:
            outputs[address] = run(address, server.port, client_key, known_hosts)

        threads = [threading.Thread(target=fetch, args=(address,)) for address in addresses]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - started
    assert outputs == {address: (f"{address} ran {COMMAND}\n", 0) for address in addresses}
    assert elapsed < 20 * 0.5  # one after the other they would take 10 s


def test_load_server_stop_is_quick_and_closes_the_port(
    load_server: LoadServer, client_key: paramiko.PKey,
) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(LOAD_ADDRESSES[0], port=load_server.port, username="monitor", pkey=client_key,
                   look_for_keys=False, allow_agent=False, timeout=10)
    idle = socket.create_connection((LOAD_ADDRESSES[1], load_server.port), timeout=5)
    try:
        started = time.monotonic()
        load_server.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(OSError):
            socket.create_connection((LOAD_ADDRESSES[0], load_server.port), timeout=2).close()
    finally:
        idle.close()
        client.close()


def test_load_server_is_quiet_when_clients_hang_up(
    load_server: LoadServer, capfd: pytest.CaptureFixture[str],
) -> None:
    with socket.create_connection((LOAD_ADDRESSES[0], load_server.port), timeout=5) as rude:
        rude.sendall(b"SSH-2.0-rude\r\n\x00\x00\x00\x05garbage")
        rude.recv(100)
    with socket.create_connection((LOAD_ADDRESSES[1], load_server.port), timeout=5):
        pass
    time.sleep(0.5)
    load_server.stop()
    assert capfd.readouterr().err == ""


# --- OpenSSHServer --------------------------------------------------------------------------


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    """An ed25519 key and a passphrase-protected RSA key in PEM format, made by ssh-keygen."""
    require_sshd()
    rsa_pem = make_key(tmp_path, "id_rsa", "rsa", PASSPHRASE, "pem")
    assert rsa_pem.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED")
    return make_key(tmp_path, "id_ed25519"), rsa_pem


@pytest.fixture
def ed25519_key(key_files: tuple[Path, Path]) -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key_file(str(key_files[0]))


@pytest.fixture
def sshd_pair(tmp_path: Path, key_files: tuple[Path, Path]) -> Iterator[OpenSSHServer]:
    """sshd on 127.0.0.1 and 127.0.0.2 accepting both client keys."""
    with OpenSSHServer(tmp_path / "sshd", addresses=SSHD_ADDRESSES,
                       authorized_keys=key_files) as server:
        yield server


def run_as_me(server: OpenSSHServer, address: str, key: paramiko.PKey,
              known_hosts: Path) -> tuple[str, int]:
    """Exec COMMAND on the sshd as the current user (the only one sshd lets in)."""
    return run(address, server.port, key, known_hosts, username=current_user())


def test_openssh_server_serves_both_keys_on_both_addresses(
    sshd_pair: OpenSSHServer, key_files: tuple[Path, Path], ed25519_key: paramiko.PKey,
    tmp_path: Path,
) -> None:
    known_hosts = write_known_hosts(tmp_path / "known_hosts", sshd_pair)
    rsa_key = paramiko.RSAKey.from_private_key_file(str(key_files[1]), password=PASSPHRASE)
    for key in (ed25519_key, rsa_key):
        for address in SSHD_ADDRESSES:
            assert run_as_me(sshd_pair, address, key, known_hosts) == (DEFAULT_OUTPUT + "\n", 0)
    assert [sshd_pair.exec_count(address) for address in SSHD_ADDRESSES] == [2, 2]
    assert sshd_pair.commands("127.0.0.2") == [COMMAND, COMMAND]


def test_openssh_server_set_output_per_address(
    sshd_pair: OpenSSHServer, ed25519_key: paramiko.PKey, tmp_path: Path,
) -> None:
    known_hosts = write_known_hosts(tmp_path / "known_hosts", sshd_pair)
    sshd_pair.set_output("1.00 2.00 3.00 4/50 999\n")
    sshd_pair.set_output("7.50 7.00 6.50 9/300 4321", "127.0.0.2")
    assert run_as_me(sshd_pair, "127.0.0.1", ed25519_key, known_hosts) == (
        "1.00 2.00 3.00 4/50 999\n", 0)
    assert run_as_me(sshd_pair, "127.0.0.2", ed25519_key, known_hosts) == (
        "7.50 7.00 6.50 9/300 4321", 0)
    assert [sshd_pair.exec_count(address) for address in SSHD_ADDRESSES] == [1, 1]


def test_openssh_server_sleep_file_delays_one_address(
    sshd_pair: OpenSSHServer, ed25519_key: paramiko.PKey, tmp_path: Path,
) -> None:
    known_hosts = write_known_hosts(tmp_path / "known_hosts", sshd_pair)
    sshd_pair.set_sleep(0.6, "127.0.0.2")
    started = time.monotonic()
    run_as_me(sshd_pair, "127.0.0.2", ed25519_key, known_hosts)
    assert time.monotonic() - started >= 0.5
    sshd_pair.set_sleep(None, "127.0.0.2")
    assert not (sshd_pair.directory / "load" / "127.0.0.2.sleep").exists()


def test_openssh_server_rejects_unknown_key(sshd_pair: OpenSSHServer, tmp_path: Path) -> None:
    known_hosts = write_known_hosts(tmp_path / "known_hosts", sshd_pair)
    stranger = paramiko.ECDSAKey.generate()
    with pytest.raises(paramiko.AuthenticationException):
        run_as_me(sshd_pair, "127.0.0.1", stranger, known_hosts)
    assert sshd_pair.exec_count("127.0.0.1") == 0


def test_openssh_server_regenerate_host_key_changes_key(
    sshd_pair: OpenSSHServer, ed25519_key: paramiko.PKey, tmp_path: Path,
) -> None:
    old_known_hosts = write_known_hosts(tmp_path / "old_known_hosts", sshd_pair)
    old_key, port = sshd_pair.host_public_key, sshd_pair.port
    sshd_pair.regenerate_host_key()
    assert (sshd_pair.port, sshd_pair.host_public_key != old_key) == (port, True)
    with pytest.raises(paramiko.BadHostKeyException):
        run_as_me(sshd_pair, "127.0.0.1", ed25519_key, old_known_hosts)
    new_known_hosts = write_known_hosts(tmp_path / "new_known_hosts", sshd_pair)
    assert run_as_me(sshd_pair, "127.0.0.1", ed25519_key, new_known_hosts)[1] == 0


def test_openssh_server_rejects_non_loopback_address(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="127"):
        OpenSSHServer(tmp_path, addresses=["127.0.0.1", "192.168.1.1"])
