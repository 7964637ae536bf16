"""idcf-compute-api: call any CloudStack API command, signed with your account's keys.

Signs each request the way the CloudStack management server checks it, prints the JSON
answer (or a table or CSV of chosen fields), pages through long lists, waits for async jobs
with --wait, retries reads (never changes) and keeps keys and signatures out of every line
it prints. The account comes from [account] in ~/.idcfrc, or from --config PATH.

Examples:
  idcf-compute-api listZones -t id,name
  idcf-compute-api listServiceOfferings -t id,displaytext
  idcf-compute-api listLoadBalancerRules -t id,name,publicip
  idcf-compute-api --config ~/other.idcfrc listVirtualMachines -c id,name,state
  idcf-compute-api deployVirtualMachine --serviceofferingid=24 --templateid=3525 \\
      --zoneid=2 --displayname="web 3" --wait
  idcf-compute-api listVirtualMachines | jq '.listvirtualmachinesresponse.count'
"""

from __future__ import annotations

import argparse
import base64
import configparser
import hashlib
import hmac
import importlib.metadata
import json
import logging
import math
import os
import re
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Optional, Union
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote, urlsplit

import requests

import textio
from textio import did_you_mean, format_csv, format_table


def installed_version(distribution: str = "ssh-scale") -> str:
    """The installed distribution's version; "0+unknown" in a checkout never installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = installed_version()

log = logging.getLogger("idcf_api")

DEFAULT_CONFIG = "~/.idcfrc"
DEFAULT_TIMEOUT = 30.0
DEFAULT_EXPIRES = 600
CLOCK_TOLERANCE = 5.0  # seconds: the Date header's resolution plus an answer's latency
READ_RETRIES = 3
RELIST_ATTEMPTS = 3  # a list that keeps changing while it is paged is read this often
MAX_GET_LENGTH = 2000
ENV_NAMES = {
    "host": ("CLOUDSTACK_ENDPOINT", "IDCF_COMPUTE_HOST"),
    "api_key": ("CLOUDSTACK_KEY", "IDCF_COMPUTE_API_KEY"),
    "secret_key": ("CLOUDSTACK_SECRET", "IDCF_COMPUTE_SECRET_KEY"),
}
ACCOUNT_KEYS = ("host", "api_key", "secret_key", "verify", "timeout", "expires")
REDACTED = "***"
_SECRET_PARAM = re.compile(r"(?i)\b(signature|apikey|api_key|secret_key|secretkey)=([^&\s\"',]+)")


class CloudStackError(Exception):
    """Base of every error this module raises."""


class ConfigError(CloudStackError):
    """The account settings are missing or malformed."""


class TransportError(CloudStackError):
    """The API could not be reached, timed out, or answered something that is not JSON."""

    def __init__(self, message: str, *, status: Optional[int] = None,
                 retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ApiError(CloudStackError):
    """The API answered with an error (HTTP status = CloudStack errorcode)."""

    def __init__(self, command: str, status: int, errorcode: Optional[int],
                 cserrorcode: Optional[int], errortext: str) -> None:
        self.command = command
        self.status = status
        self.errorcode = errorcode
        self.cserrorcode = cserrorcode
        self.errortext = errortext
        codes = f"HTTP {status}, errorcode {errorcode}"
        if cserrorcode is not None:
            codes += f", cserrorcode {cserrorcode}"
        super().__init__(f"{command}: {codes}: {errortext}")


class JobFailed(CloudStackError):
    """An async job ended with jobstatus 2."""

    def __init__(self, jobid: str, errorcode: Optional[int], errortext: str,
                 instance_id: Optional[str] = None) -> None:
        self.jobid = jobid
        self.errorcode = errorcode
        self.errortext = errortext
        self.instance_id = instance_id
        super().__init__(f"job {jobid} failed (errorcode {errorcode}): {errortext}")


class JobTimeout(CloudStackError):
    """An async job did not finish within the allowed time."""

    def __init__(self, jobid: str, timeout: float) -> None:
        self.jobid = jobid
        self.timeout = timeout
        super().__init__(f"job {jobid} still pending after {timeout:g} s")


@dataclass(frozen=True)
class Account:
    """Where and as whom to call the API."""

    endpoint: str
    api_key: str
    secret_key: str = ""
    verify: Union[bool, str] = True
    timeout: float = DEFAULT_TIMEOUT
    expires: int = DEFAULT_EXPIRES

    def __repr__(self) -> str:
        return f"Account(endpoint={self.endpoint!r}, api_key={REDACTED!r}, secret_key={REDACTED!r})"


# --- signing (pure) -------------------------------------------------------------------------
def java_urlencode(value: str) -> str:
    """Encode like Java's URLEncoder, then spaces as %20 (what the server signs)."""
    # Python's quote() keeps "~" unescaped; Java escapes it.
    return quote(value, safe="*-_.").replace("~", "%7E")


def signing_string(params: Mapping[str, str]) -> str:
    """The lowercased string the server computes the HMAC over."""
    pairs = sorted((k, v) for k, v in params.items() if k.lower() != "signature")
    return "&".join(f"{k}={java_urlencode(v)}" for k, v in pairs).lower()


def sign(params: Mapping[str, str], secret_key: str) -> str:
    """Return the base64 HMAC-SHA1 signature of params, as ApiServer.verifyRequest checks it."""
    digest = hmac.new(secret_key.encode(), signing_string(params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def expires_at(now: datetime, lifetime: int) -> str:
    """The signature-version-3 ``expires`` value, in the +hhmm form every release accepts."""
    return (now + timedelta(seconds=lifetime)).astimezone(timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S+0000")


def signed_params(command: str, params: Mapping[str, Any], account: Account,
                  now: datetime) -> dict[str, str]:
    """All parameters of one request, signature included."""
    out = {k: _param_value(v) for k, v in params.items() if v is not None}
    out.update(command=command, response="json", apiKey=account.api_key)
    if account.expires > 0:
        out.update(signatureVersion="3", expires=expires_at(now, account.expires))
    out["signature"] = sign(out, account.secret_key)
    return out


def _param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove secrets and signature/apiKey parameter values from text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts secrets from every record passing through it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def add(self, *secrets: str) -> None:
        self.secrets.extend(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = redact(record.getMessage(), self.secrets)
        if record.exc_info:
            message += "\n" + redact(logging.Formatter().formatException(record.exc_info),
                                     self.secrets)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = message, ()
        return True


def is_read_only(command: str) -> bool:
    """True for commands that change nothing and may be retried safely."""
    return command.lower().startswith(("list", "query"))


# --- account settings ---------------------------------------------------------------------
def config_path(path: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> str:
    """The config file to read: the given path, else $IDCFRC, else ~/.idcfrc."""
    environ = os.environ if environ is None else environ
    return os.path.expanduser(path or environ.get("IDCFRC") or DEFAULT_CONFIG)


def read_text(path: str, expected: str = "UTF-8 INI", encoding: str = "utf-8") -> str:
    """A text file's content; raises ConfigError naming the file when it cannot be read."""
    try:
        return textio.read_text(path, expected, encoding)
    except textio.UnreadableFile as exc:
        raise ConfigError(str(exc)) from None


def read_config(path: str) -> configparser.ConfigParser:
    """Parse an INI file; raises ConfigError naming the file on any problem."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(read_text(path), source=path)
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not a valid INI file: {redact(first_line)}") from None
    return parser


def account_from_config(parser: Optional[configparser.ConfigParser], source: str,
                        environ: Optional[Mapping[str, str]] = None) -> Account:
    """Build the Account from an [account] section, overridden by environment variables."""
    environ = os.environ if environ is None else environ
    section: Mapping[str, str] = {}
    if parser is not None and parser.has_section("account"):
        section = parser["account"]
        unknown = sorted(set(section) - set(ACCOUNT_KEYS))
        if unknown:
            raise ConfigError(f"{source}: [account] {unknown[0]}: unknown key"
                              f"{did_you_mean(unknown[0], ACCOUNT_KEYS)}")
    values = {}
    for key, env_names in ENV_NAMES.items():
        from_env = next((environ[n] for n in env_names if environ.get(n)), None)
        value = from_env if from_env is not None else section.get(key, "").strip()
        if not value:
            where = f"{source}: {'' if parser is not None else 'no such file; '}[account] {key}"
            raise ConfigError(f"{where}: missing (or set {env_names[0]})")
        values[key] = value
    where = f"{source}: [account]"
    return Account(
        endpoint=_checked_endpoint(values["host"], where),
        api_key=values["api_key"],
        secret_key=values["secret_key"],
        verify=_parse_verify(section.get("verify", "yes"), where),
        timeout=_positive_number(section.get("timeout", str(DEFAULT_TIMEOUT)), f"{where} timeout"),
        expires=int(_positive_number(section.get("expires", str(DEFAULT_EXPIRES)),
                                     f"{where} expires", allow_zero=True)),
    )


def load_account(path: Optional[str] = None,
                 environ: Optional[Mapping[str, str]] = None) -> Account:
    """Account from the config file and environment (which alone may name all three)."""
    environ = os.environ if environ is None else environ
    resolved = config_path(path, environ)
    explicit = bool(path or environ.get("IDCFRC"))
    if not explicit and not os.path.exists(resolved):
        return account_from_config(None, resolved, environ)
    return account_from_config(read_config(resolved), resolved, environ)


def _checked_endpoint(value: str, where: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where} host: expected an http(s) URL such as "
                          f"https://compute.example.com/client/api, got {value!r}")
    return value


def _parse_verify(value: str, where: str) -> Union[bool, str]:
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    if os.path.exists(path := os.path.expanduser(value.strip())):
        return path
    raise ConfigError(f"{where} verify: expected yes, no or a CA bundle path, got {value!r}")


def _positive_number(value: str, where: str, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(f"{where}: expected a positive number, got {value!r}")
    return number


# --- the client -----------------------------------------------------------------------------
class Client:
    """A CloudStack API client: ``call``, ``list`` and ``wait``."""

    def __init__(self, account: Account, *, session: Optional[requests.Session] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 retries: int = READ_RETRIES) -> None:
        self.account = account
        self.session = session or requests.Session()
        self.sleep = sleep
        self.monotonic = monotonic
        self.retries = retries
        self._secrets = (account.api_key, account.secret_key)
        #: Seconds the server's clock is ahead of ours, from the last answer's Date header.
        self.clock_skew = 0.0
        #: Seconds added to our clock for `expires`: the skew, once a request signed on our
        #: clock was refused (HTTP 401) while the clocks differed.
        self.signing_skew = 0.0

    def request(self, command: str, **params: Any) -> dict:
        """The full JSON answer (with its envelope); reads are retried, mutations never. A
        401 while this machine's clock is off the server's is signed again on the server's
        clock once (and so is every later request); a 401 that stays says what to check."""
        try:
            return self._request_on_either_clock(command, params)
        except ApiError as exc:
            if exc.status != 401:
                raise
            hint = explain_unauthorized(command, self.clock_skew, self.account.expires)
            raise ApiError(command, 401, exc.errorcode, exc.cserrorcode,
                           f"{exc.errortext}; {hint}") from None

    def _request_on_either_clock(self, command: str, params: Mapping[str, Any]) -> dict:
        """Signed on our clock (plus signing_skew); after a 401 while the clocks differ, sent
        once more signed on the server's. The server refuses a request it cannot verify
        before acting on it, so even a mutation is safe to send again."""
        signed_with = self.signing_skew
        try:
            return self._request_retrying(command, params)
        except ApiError as exc:
            if exc.status != 401 or not self.account.expires or \
                    abs(self.clock_skew - signed_with) <= CLOCK_TOLERANCE:
                raise
        self.signing_skew = self.clock_skew
        log.debug("%s: HTTP 401 with the clocks %.0f s apart: signing on the server's clock",
                  command, self.clock_skew)
        return self._request_retrying(command, params)

    def _request_retrying(self, command: str, params: Mapping[str, Any]) -> dict:
        attempts = 1 + (self.retries if is_read_only(command) else 0)
        for attempt in range(1, attempts + 1):
            try:
                return self._request_once(command, params)
            except (TransportError, ApiError) as exc:
                if attempt == attempts or not _is_transient(exc):
                    raise
                delay = 0.5 * 2 ** (attempt - 1)
                log.debug("%s: %s; retry %d/%d in %.1f s", command, exc, attempt,
                          self.retries, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def call(self, command: str, **params: Any) -> dict:
        """The answer without its ``<command>response`` envelope."""
        return unwrap(command, self.request(command, **params))

    def list(self, command: str, max_pages: Optional[int] = None, **params: Any) -> list[dict]:
        """Every object a list command returns, following pages (at most max_pages). When the
        total changes between pages, the list changed meanwhile and an object may have moved
        from a page not yet read to one already read: it is listed again from the start (up to
        RELIST_ATTEMPTS times)."""
        if "page" in params or "pagesize" in params:
            return list_items(self.call(command, **params))
        for _ in range(RELIST_ATTEMPTS):
            items, stable = self._pages(command, max_pages, params)
            if stable:
                break
            log.debug("%s: the list changed while it was read; reading it again", command)
        return items

    def _pages(self, command: str, max_pages: Optional[int],
               params: Mapping[str, Any]) -> tuple[list[dict], bool]:
        """(the objects, whether the total stayed the same on every page)."""
        # The first request leaves the page size to the server (its default.page.size may be
        # below 500, and a larger pagesize is refused); further pages use the size it chose.
        answer = self.call(command, **params)
        items = list_items(answer)
        total = int(answer.get("count") or 0)
        size, page = len(items), 1
        while items and len(items) < total and (max_pages is None or page < max_pages):
            page += 1
            answer = self.call(command, page=page, pagesize=size, **params)
            more = list_items(answer)
            if int(answer.get("count") or 0) != total:
                return items + more, False
            if not more:
                break
            items.extend(more)
        return items, True

    def wait(self, jobid: str, timeout: float = 900.0,
             on_poll: Optional[Callable[[dict], None]] = None) -> dict:
        """Poll queryAsyncJobResult until the job ends; return its jobresult. Raises JobFailed
        (jobstatus 2) or JobTimeout. Polls at 0.2 s growing to 1 s: quick, not hammering."""
        deadline = self.monotonic() + timeout
        interval = 0.2
        while True:
            answer = self.call("queryAsyncJobResult", jobid=jobid)
            if on_poll is not None:
                on_poll(answer)
            status = int(answer.get("jobstatus", 0))
            if status == 1:
                return answer.get("jobresult") or {}
            if status == 2:
                result = answer.get("jobresult") or {}
                raise JobFailed(jobid, result.get("errorcode", answer.get("jobresultcode")),
                                str(result.get("errortext", "no errortext")),
                                answer.get("jobinstanceid"))
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                raise JobTimeout(jobid, timeout)
            self.sleep(min(interval, remaining))
            interval = min(interval * 1.5, 1.0)

    def _request_once(self, command: str, params: Mapping[str, Any]) -> dict:
        query = signed_params(command, params, self.account, datetime.now(timezone.utc) +
                              timedelta(seconds=self.signing_skew))
        method = "POST" if _needs_post(query) else "GET"
        log.debug("%s %s %s", method, command, self._redacted(query))
        started = self.monotonic()
        try:
            response = self.session.request(
                method, self.account.endpoint, timeout=self.account.timeout,
                verify=self.account.verify, **{"params" if method == "GET" else "data": query})
        except requests.Timeout:
            raise TransportError(f"{command}: {self._where()}: no answer within "
                                 f"{self.account.timeout:g} s") from None
        except requests.RequestException as exc:
            reason, retryable = _diagnose(exc)
            raise TransportError(f"{command}: {self._where()}: {redact(reason, self._secrets)}",
                                 retryable=retryable) from None
        log.debug("%s: HTTP %d in %.3f s", command, response.status_code,
                  self.monotonic() - started)
        self._note_server_time(response.headers.get("Date"))
        return self._decode(command, response)

    def _note_server_time(self, date: Optional[str]) -> None:
        try:
            self.clock_skew = parsedate_to_datetime(date or "").timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            pass  # no usable Date header: keep what we knew

    def _decode(self, command: str, response: requests.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type").split(";")[0]
            raise TransportError(
                f"{command}: {self._where()}: HTTP {response.status_code} with a non-JSON "
                f"answer ({kind}); check [account] host is the API endpoint",
                status=response.status_code) from None
        if not isinstance(body, dict):
            raise TransportError(f"{command}: unexpected answer: {redact(str(body)[:80])}",
                                 status=response.status_code)
        if response.status_code >= 400:
            inner = unwrap(command, body)
            raise ApiError(command, response.status_code, inner.get("errorcode"),
                           inner.get("cserrorcode"),
                           redact(str(inner.get("errortext", "no errortext")), self._secrets))
        return body

    def _redacted(self, query: Mapping[str, str]) -> str:
        shown = {k: (REDACTED if k.lower() in ("apikey", "signature") else v)
                 for k, v in query.items()}
        return redact(json.dumps(shown, ensure_ascii=False), self._secrets)

    def _where(self) -> str:
        parts = urlsplit(self.account.endpoint)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


def unwrap(command: str, body: Mapping[str, Any]) -> dict:
    """The inside of ``{"<command>response": {...}}``."""
    key = command.lower() + "response"
    if key in body:
        return dict(body[key] or {})
    if len(body) == 1:
        inner = next(iter(body.values()))
        return dict(inner) if isinstance(inner, dict) else {}
    return dict(body)


def list_items(answer: Mapping[str, Any]) -> list[dict]:
    """The object list of a list answer ({} when CloudStack found nothing)."""
    for key, value in answer.items():
        if key != "count" and isinstance(value, list):
            return list(value)
    return []


def _is_transient(exc: CloudStackError) -> bool:
    if isinstance(exc, TransportError):
        return exc.retryable and (exc.status is None or exc.status >= 500)
    return isinstance(exc, ApiError) and exc.status >= 500


def _needs_post(query: Mapping[str, str]) -> bool:
    # Long queries (userdata) go in a form body: proxies and servers cap URL length.
    return sum(len(k) + len(v) + 2 for k, v in query.items()) * 3 > MAX_GET_LENGTH


def _causes(exc: BaseException) -> list[BaseException]:
    """exc and the errors it wraps, outermost first (requests, urllib3, then ssl or socket)."""
    chain = [exc]
    for last in chain:
        inner = [e for e in (getattr(last, "reason", None), last.__cause__, last.__context__,
                             *last.args) if isinstance(e, BaseException) and e not in chain]
        chain.extend(inner[:1] if len(chain) < 12 else [])
    return chain


def _diagnose(exc: requests.RequestException) -> tuple[str, bool]:
    """What a failed request ran into, with the fix, and whether a retry could pass: not after
    a certificate or "no such name" DNS failure; after a refused connection it can (a server or
    the load balancer in front of it restarting), and reads retry only briefly anyway."""
    causes = _causes(exc)
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = str(cause.verify_message or cause.reason).rstrip(".")
            fix = ("put the name the certificate is issued for in [account] host"
                   if "mismatch" in why else
                   "if the API uses a private CA, set [account] verify = /path/to/ca.pem")
            return f"TLS certificate not accepted ({why}); {fix}", False
        if isinstance(cause, socket.gaierror):
            if cause.errno == socket.EAI_AGAIN:
                return f"temporary DNS failure ({cause.strerror})", True
            return f"host name not found ({cause.strerror}); check [account] host", False
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused; is the API server up? check [account] host", True
    inner = causes[-1]
    return (str(inner) or inner.__class__.__name__).strip(), True


# --- the idcf-compute-api command ------------------------------------------------------------
PROG = "idcf-compute-api"
OWN_OPTIONS = ("--config", "--table", "--csv", "--noheaders", "--wait", "--timeout",
               "--verbose", "--version", "--help")


class UsageError(CloudStackError):
    """The command line is malformed."""


def split_api_params(words: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Separate our own options from ``--name=value`` / ``name=value`` API parameters."""
    own: list[str] = []
    params: dict[str, str] = {}
    for word in words:
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            is_param = bool(eq) and f"--{name}" not in OWN_OPTIONS
        else:
            name, eq, value = word.partition("=")
            is_param = bool(eq) and not word.startswith("-")
        if not is_param:
            own.append(word)
        elif not re.fullmatch(r"[A-Za-z0-9_.\[\]]+", name):
            raise UsageError(f"bad parameter name {name!r} in {word!r}")
        else:
            params[name] = value
    return own, params


def objects_of(answer: Mapping[str, Any]) -> list[dict]:
    """The rows to tabulate: a list answer's objects, or the single object answered."""
    items = list_items(answer)
    if items or "count" in answer or not answer:
        return items
    singles = [v for v in answer.values() if isinstance(v, dict)]
    return singles if len(singles) == 1 else [dict(answer)]


def columns_for(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[str]:
    """The requested columns in the given order, or every key seen when none are given."""
    return list(fields) if fields else list(dict.fromkeys(key for row in rows for key in row))


def build_parser() -> argparse.ArgumentParser:
    """The idcf-compute-api argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="API parameters: --name=value or name=value. Account: [account] host, api_key,\n"
               "secret_key in the config file, or CLOUDSTACK_ENDPOINT / CLOUDSTACK_KEY /\n"
               "CLOUDSTACK_SECRET. Exit codes: 0 ok, 1 API, transport or job error,\n"
               "2 usage or config error, 130 interrupted.")
    parser.add_argument("command", help="API command, e.g. listZones")
    parser.add_argument("--config", metavar="PATH", help="config file ($IDCFRC, else ~/.idcfrc)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("-t", "--table", nargs="?", const="", metavar="FIELDS",
                     help="ASCII table of these comma-separated fields (all when omitted)")
    out.add_argument("-c", "--csv", nargs="?", const="", metavar="FIELDS",
                     help="CSV of these fields (all when omitted); a config file is --config")
    parser.add_argument("--noheaders", action="store_true", help="omit the header row")
    parser.add_argument("--wait", action="store_true",
                        help="for async commands: wait for the job and print its result")
    parser.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                        help="with --wait: how long to wait (default 900)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug log on stderr (secrets redacted)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def render(answer: dict, command: str, args: argparse.Namespace) -> tuple[str, list[str]]:
    """Text for stdout, and notes for stderr."""
    flag, fields = output_fields(args)
    if not flag:
        return json.dumps(answer, indent=2, ensure_ascii=False), []
    inner = unwrap(command, answer)
    if "jobresult" in inner:
        inner = inner["jobresult"] or {}
    rows = objects_of(inner)
    notes = field_notes(args, rows)
    if not rows:
        empty = f"no data: {command} returned an empty list"
        return (empty, notes) if flag == "-t" else ("", [empty, *notes])
    formatter = format_table if flag == "-t" else format_csv
    return formatter(rows, columns_for(rows, fields), not args.noheaders), notes


def output_fields(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The output option given ("-t", "-c", or "" for JSON) and the fields named with it."""
    if args.table is None and args.csv is None:
        return "", []
    flag, value = ("-t", args.table) if args.table is not None else ("-c", args.csv)
    return flag, [f.strip() for f in value.split(",") if f.strip()]


def misplaced_config(args: argparse.Namespace) -> Optional[str]:
    """A -t/-c field that reads like a config file (-c is --csv here, --config in ssh_scale.py)."""
    return next((f for f in output_fields(args)[1]
                 if "/" in f or f.endswith((".ini", ".idcfrc", "rc")) or os.path.isfile(f)), None)


def refuse_misplaced_config(args: argparse.Namespace) -> None:
    """Before sending, refuse a change whose -t/-c names a config file (wrong account)."""
    path = misplaced_config(args)
    if path and not is_read_only(args.command):
        flag = output_fields(args)[0]
        raise UsageError(f"{flag} {path}: {flag} takes output fields, not a config file; "
                         f"nothing was sent; for another account use --config {path}")


def config_hint(args: Optional[argparse.Namespace]) -> str:
    """For a command that failed (no such file, a 401 from the wrong account) while a -t/-c
    field names a config file: the hint that it goes with --config."""
    path = misplaced_config(args) if args is not None else None
    if not path:
        return ""
    flag = output_fields(args)[0]
    return (f"; note: {flag} {path}: {flag} takes output fields, so the account was the one "
            f"in {config_path(args.config)}; for the account in {path} use --config {path}")


def field_notes(args: argparse.Namespace, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Notes for a -t/-c field that looks like a config file or matches no key of the answer."""
    flag, fields = output_fields(args)
    path = misplaced_config(args)
    if path:
        return [f"note: {flag} {path}: {flag} takes output fields; this answer is for the "
                f"account in {config_path(args.config)}; use --config {path}"]
    keys = {key for row in rows for key in row}
    return [f"note: {flag} {field}: no such key in the answer{did_you_mean(field, keys)}; "
            "a config file goes with --config" for field in fields if rows and field not in keys]


def explain_unauthorized(command: str, clock_skew: float, expires: int) -> str:
    """Why a 401: a command name CloudStack does not know, else the keys, and the clock when it
    is off the server's by `clock_skew` s (the request signed again on the server's clock, as
    Client.request does, was refused too)."""
    try:
        import cloudstack_commands as known
    except ImportError:  # idcf_api.py copied alone: no names to compare with
        known = None
    if known is not None and command not in known.NAMES:
        return (f"{command} is not an API command of CloudStack {known.RELEASES}"
                f"{did_you_mean(command, known.NAMES, most=3)}")
    hint = f"check [account] api_key and secret_key, and that this account may call {command}"
    if expires and abs(clock_skew) > CLOCK_TOLERANCE:
        hint += (f"; this machine's clock is {abs(clock_skew):.0f} s "
                 f"{'behind' if clock_skew > 0 else 'ahead of'} the cloud's (set it with NTP; "
                 "signed again on the cloud's clock, the request was refused too)")
    return hint


def install_redacting_handler(stream: Any, formatter: logging.Formatter, verbose: bool,
                              secrets: Iterable[str] = ()) -> RedactingFilter:
    """Make one handler on `stream`, every record passed through a redacting filter, the root
    logger's only handler (debug when verbose, else warnings); returns the filter (add secrets)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    return redactor


def configure_logging(verbose: bool, secrets: Iterable[str] = ()) -> RedactingFilter:
    """Log to stderr (debug when verbose), every record passed through a redacting filter."""
    redactor = install_redacting_handler(
        sys.stderr, logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"),
        verbose, secrets)
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose else logging.WARNING)
    return redactor


def run_command(args: argparse.Namespace, params: dict[str, str],
                redactor: RedactingFilter) -> int:
    """Carry out one parsed command line; raises CloudStackError on failure."""
    refuse_misplaced_config(args)
    account = load_account(args.config)
    redactor.add(account.api_key, account.secret_key)
    client = Client(account)
    answer = client.request(args.command, **params)
    inner = unwrap(args.command, answer)
    if args.wait and inner.get("jobid"):
        final: dict = {}
        client.wait(str(inner["jobid"]), timeout=args.timeout, on_poll=final.update)
        answer = {"queryasyncjobresultresponse": final}
        args.command = "queryAsyncJobResult"
    text, notes = render(answer, args.command, args)
    if text:
        print(text)
    for note in notes:
        print(note, file=sys.stderr)
    return 0


def closed_pipe() -> int:
    """Exit status 0 for a reader that stopped (e.g. head); stdout to /dev/null: quiet exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of idcf-compute-api; returns the exit status (0, 1, 2 or 130)."""
    redactor = RedactingFilter()
    args: Optional[argparse.Namespace] = None
    try:
        own, params = split_api_params(list(sys.argv[1:] if argv is None else argv))
        args = build_parser().parse_args(own)
        redactor = configure_logging(args.verbose)
        return run_command(args, params, redactor)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (status 2)
        return int(exc.code or 0)
    except UsageError as exc:
        return fail(exc, 2, redactor)
    except ConfigError as exc:
        return fail(f"{exc}{config_hint(args)}", 2, redactor)
    except CloudStackError as exc:
        return fail(f"{exc}{config_hint(args)}", 1, redactor)
    except KeyboardInterrupt:
        return fail("interrupted", 130, redactor)
    except BrokenPipeError:
        return closed_pipe()
    except Exception as exc:  # a bug or an answer we do not understand: still one line
        log.debug("unexpected error", exc_info=True)
        return fail(f"unexpected {exc.__class__.__name__}: {exc} (see -v)", 1, redactor)


def fail(problem: object, status: int, redactor: RedactingFilter) -> int:
    """Print the problem as one redacted line on stderr; return the exit status."""
    line = re.sub(r"\s*[\r\n]+\s*", " ", str(problem))
    print(f"{PROG}: error: {redact(line, redactor.secrets)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
