"""An in-process SSH server (paramiko) on loopback addresses that answers every exec with a load
report computed by a callback; for the demo, the benchmarks and fast tests.

    with LoadServer(lambda address, command: "0.42 0.30 0.25 1/100 1234\\n",
                    addresses=["127.0.2.1", "127.0.2.2"], authorized_keys=[client_key]) as server:
        ...  # ssh to 127.0.2.1 or 127.0.2.2 on server.port, trusting server.known_hosts_line(...)

Every address must lie in 127.0.0.0/8; all of them listen on the same port number.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import socket
import threading
import time
from typing import Callable, Iterable, Optional, Sequence

import paramiko

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# Server-side transports log here instead of "paramiko.transport", so that silencing the noise of
# clients that hang up mid-handshake leaves the client side's logging alone.
SERVER_LOG_CHANNEL = "load_sshd.transport"
POLL_SECONDS = 0.1  # how often blocked threads look at the stop flag
BIND_ATTEMPTS = 20  # port 0: fresh ports to try when another process holds one on a later address
LISTEN_BACKLOG = 128
SYNC_REQUEST = "keepalive@openssh.com"  # every client answers it (with a failure) and ignores it
JOIN_SECONDS = 0.8  # stop() waits at most this long for the threads it owns

Respond = Callable[[str, str], str]

_default_key: Optional[paramiko.PKey] = None
_default_key_lock = threading.Lock()


def check_loopback(addresses: Iterable[str]) -> tuple[str, ...]:
    """Return the addresses in canonical form; raise ValueError unless each is in 127.0.0.0/8."""
    checked: list[str] = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"{address!r} is not an IP address (use 127.x.y.z)") from None
        if ip not in LOOPBACK:
            raise ValueError(f"{address} is not in {LOOPBACK}: only loopback addresses are allowed")
        if str(ip) in checked:
            raise ValueError(f"{address} is listed twice")
        checked.append(str(ip))
    if not checked:
        raise ValueError("at least one address is needed")
    return tuple(checked)


def default_host_key() -> paramiko.PKey:
    """Return this process's shared ECDSA P-256 host key, generated on first use.

    paramiko cannot generate Ed25519 keys; ECDSA is the quick one to make.
    """
    global _default_key
    with _default_key_lock:
        if _default_key is None:
            _default_key = paramiko.ECDSAKey.generate()
        return _default_key


def known_hosts_line(address: str, port: int, key: paramiko.PKey) -> str:
    """Return the OpenSSH known_hosts line for `key` served at address:port."""
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {key.get_name()} {key.get_base64()}"


def _listen(address: str, port: int) -> socket.socket:
    """Return a listening TCP socket on address:port that times out accept() for polling."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(LISTEN_BACKLOG)
    except OSError:
        listener.close()
        raise
    listener.settimeout(POLL_SECONDS)
    return listener


def _listen_all(addresses: Sequence[str], port: int) -> list[socket.socket]:
    """Listen on every address with one port number; raise OSError when that port is taken."""
    listeners: list[socket.socket] = []
    try:
        for address in addresses:
            listeners.append(_listen(address, port))
            port = listeners[0].getsockname()[1]
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def bind_same_port(addresses: Sequence[str], port: int = 0) -> list[socket.socket]:
    """Listen on every address with the same port; port 0 picks one free on all of them.

    Raises OSError when a fixed port is taken, or when BIND_ATTEMPTS picked ports all were.
    """
    if port:
        return _listen_all(addresses, port)
    for _attempt in range(BIND_ATTEMPTS - 1):
        try:
            return _listen_all(addresses, 0)
        except OSError:
            continue
    return _listen_all(addresses, 0)


class _SessionHandler(paramiko.ServerInterface):
    """Public-key auth against a fixed key set; queues each exec for the connection thread."""

    def __init__(self, keys: set[str], username: Optional[str]) -> None:
        self._keys = keys
        self._username = username
        self.requests: queue.Queue[tuple[paramiko.Channel, str]] = queue.Queue()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        user_ok = self._username is None or username == self._username
        if user_ok and key.get_base64() in self._keys:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.requests.put((channel, command.decode("utf-8", "replace")))
        return True


class LoadServer:
    """SSH server on loopback addresses whose every exec prints respond(address, command)."""

    def __init__(
        self,
        respond: Respond,
        *,
        addresses: Sequence[str] = ("127.0.0.1",),
        port: int = 0,
        authorized_keys: Iterable[paramiko.PKey] = (),
        host_key: Optional[paramiko.PKey] = None,
        delay: float = 0.0,
        username: Optional[str] = None,
    ) -> None:
        """Check the settings (ValueError on a non-loopback address, bad port or delay)."""
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is outside 0..65535")
        if delay < 0:
            raise ValueError(f"delay {delay} s is negative")
        self.addresses = check_loopback(addresses)
        self.port = port
        self.host_key = host_key if host_key is not None else default_host_key()
        self.delay = delay
        self.exec_count: dict[str, int] = {address: 0 for address in self.addresses}
        self._respond = respond
        self._keys = {key.get_base64() for key in authorized_keys}
        self._username = username
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listeners: list[socket.socket] = []
        self._accept_threads: list[threading.Thread] = []
        self._connections: dict[threading.Thread, paramiko.Transport] = {}

    def __enter__(self) -> LoadServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LoadServer:
        """Listen on every address and serve in daemon threads; OSError if the port is taken."""
        if self._listeners:
            raise RuntimeError("LoadServer is already running")
        logger = logging.getLogger(SERVER_LOG_CHANNEL)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL)
        self._listeners = bind_same_port(self.addresses, self.port)
        self.port = self._listeners[0].getsockname()[1]
        self._stopping.clear()
        for address, listener in zip(self.addresses, self._listeners):
            thread = threading.Thread(
                target=self._accept_loop, args=(listener, address),
                name=f"load_sshd-accept-{address}", daemon=True,
            )
            self._accept_threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        """Close the listening sockets and every connection; return within about a second."""
        self._stopping.set()
        deadline = time.monotonic() + JOIN_SECONDS
        for listener in self._listeners:
            listener.close()
        with self._lock:
            connections = list(self._connections.items())
        for _thread, transport in connections:
            transport.close()
        for thread in self._accept_threads + [thread for thread, _ in connections]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._listeners = []
        self._accept_threads = []

    def known_hosts_line(self, address: str) -> str:
        """Return "[address]:port keytype base64" (plain address on port 22) for known_hosts."""
        (address,) = check_loopback([address])
        if address not in self.addresses:
            raise ValueError(f"{address} is not one of this server's addresses {self.addresses}")
        if self.port == 0:
            raise RuntimeError("the port is picked by start(); call it first")
        return known_hosts_line(address, self.port, self.host_key)

    def _accept_loop(self, listener: socket.socket, address: str) -> None:
        while not self._stopping.is_set():
            try:
                sock, _peer = listener.accept()
            except socket.timeout:
                continue
            except OSError:  # closed by stop()
                return
            self._spawn_connection(sock, address)

    def _spawn_connection(self, sock: socket.socket, address: str) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = paramiko.Transport(sock)
        except (OSError, paramiko.SSHException):  # the client is already gone
            sock.close()
            return
        transport.set_log_channel(SERVER_LOG_CHANNEL)
        transport.add_server_key(self.host_key)
        thread = threading.Thread(
            target=self._serve_connection, args=(transport, address),
            name=f"load_sshd-conn-{address}", daemon=True,
        )
        with self._lock:  # started under the lock, so stop() never joins an unstarted thread
            if self._stopping.is_set():
                transport.close()
                return
            self._connections[thread] = transport
            thread.start()

    def _serve_connection(self, transport: paramiko.Transport, address: str) -> None:
        handler = _SessionHandler(self._keys, self._username)
        try:
            transport.start_server(server=handler)
            while transport.is_active() and not self._stopping.is_set():
                try:
                    channel, command = handler.requests.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                self._answer(transport, channel, address, command)
        except (paramiko.SSHException, EOFError, OSError):
            pass  # the client hung up or failed to negotiate: nothing to report
        finally:
            transport.close()
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    def _answer(self, transport: paramiko.Transport, channel: paramiko.Channel, address: str,
                command: str) -> None:
        """Sleep `delay`, then send respond(address, command) and exit status 0 (1 if it raised)."""
        # paramiko sends the reply to the exec request from its own thread after the request
        # was queued here; a channel close that overtook it would make a paramiko client raise
        # "Channel closed". A global request answered by the client proves the reply went out,
        # as the transport thread handles one message at a time. It ends when the client answers
        # or the connection closes (stop() closes them all).
        transport.global_request(SYNC_REQUEST, wait=True)
        if self.delay and self._stopping.wait(self.delay):
            return
        with self._lock:
            self.exec_count[address] += 1
        try:
            report = self._respond(address, command)
        except Exception as error:  # the callback's bug: tell the client, keep serving
            channel.sendall_stderr(f"load_sshd: respond() raised {error!r}\n".encode())
            channel.send_exit_status(1)
        else:
            channel.sendall(report.encode())
            channel.send_exit_status(0)
        channel.close()
