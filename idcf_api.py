"""Signed CloudStack API client and the ``idcf-compute-api`` command.

Signs requests the way the CloudStack management server verifies them
(``ApiServer.verifyRequest``), unwraps answers, pages through lists, waits for
async jobs, retries reads (never mutations) and keeps secrets out of every log
line and error message.

Examples:
  idcf-compute-api listZones -t id,name
  idcf-compute-api listServiceOfferings -t id,displaytext
  idcf-compute-api listLoadBalancerRules -t id,name,publicip
  idcf-compute-api deployVirtualMachine --serviceofferingid=24 --templateid=3525 \\
      --zoneid=2 --displayname="web 3" --wait
  idcf-compute-api listVirtualMachines | jq '.listvirtualmachinesresponse.count'
"""

from __future__ import annotations

import argparse
import base64
import configparser
import csv
import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Optional, Union
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote, urlsplit

import requests

__version__ = "1.0.0"

log = logging.getLogger("idcf_api")

DEFAULT_CONFIG = "~/.idcfrc"
DEFAULT_TIMEOUT = 30.0
DEFAULT_EXPIRES = 600
READ_RETRIES = 3
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

    def __init__(self, message: str, *, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


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
        with open(path, encoding=encoding) as handle:
            return handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected {expected})") from None


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
            where = f"{source}: [account] {key}" if parser is not None else f"[account] {key}"
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
    """Account from the config file and the environment; the file is optional when the
    environment names endpoint, key and secret."""
    environ = os.environ if environ is None else environ
    resolved = config_path(path, environ)
    explicit = bool(path or environ.get("IDCFRC"))
    if not explicit and not os.path.exists(resolved):
        return account_from_config(None, resolved, environ)
    return account_from_config(read_config(resolved), resolved, environ)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint, or ''."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


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
    if os.path.exists(os.path.expanduser(value.strip())):
        return os.path.expanduser(value.strip())
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

    def request(self, command: str, **params: Any) -> dict:
        """The full JSON answer (with its envelope); reads are retried, mutations never."""
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

    def list(self, command: str, **params: Any) -> list[dict]:
        """Every object a list command returns, following pages."""
        if "page" in params or "pagesize" in params:
            return list_items(self.call(command, **params))
        # The first request leaves the page size to the server (its default.page.size may be
        # below 500, and a larger pagesize is refused); further pages use the size it chose.
        answer = self.call(command, **params)
        items = list_items(answer)
        size, page = len(items), 1
        while items and len(items) < int(answer.get("count") or 0):
            page += 1
            answer = self.call(command, page=page, pagesize=size, **params)
            more = list_items(answer)
            if not more:
                break
            items.extend(more)
        return items

    def wait(self, jobid: str, timeout: float = 900.0,
             on_poll: Optional[Callable[[dict], None]] = None) -> dict:
        """Poll queryAsyncJobResult until the job ends; return its jobresult.

        Raises JobFailed (jobstatus 2) or JobTimeout. Polls at 0.2 s, growing to 1 s, so a
        finished job is noticed within about a second without hammering the API."""
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
        query = signed_params(command, params, self.account, datetime.now(timezone.utc))
        method = "POST" if _needs_post(query) else "GET"
        log.debug("%s %s %s", method, command, self._redacted(query))
        started = self.monotonic()
        try:
            if method == "GET":
                response = self.session.get(self.account.endpoint, params=query,
                                            timeout=self.account.timeout,
                                            verify=self.account.verify)
            else:
                response = self.session.post(self.account.endpoint, data=query,
                                             timeout=self.account.timeout,
                                             verify=self.account.verify)
        except requests.Timeout:
            raise TransportError(f"{command}: {self._where()}: no answer within "
                                 f"{self.account.timeout:g} s") from None
        except requests.RequestException as exc:
            raise TransportError(f"{command}: {self._where()}: "
                                 f"{_short_reason(exc, self._secrets)}") from None
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
            inner = next(iter(body.values()), {}) if len(body) == 1 else body
            inner = inner if isinstance(inner, dict) else {}
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
        return exc.status is None or exc.status >= 500
    return isinstance(exc, ApiError) and exc.status >= 500


def _needs_post(query: Mapping[str, str]) -> bool:
    # Long queries (userdata) go in a form body: proxies and servers cap URL length.
    return sum(len(k) + len(v) + 2 for k, v in query.items()) * 3 > MAX_GET_LENGTH


def _short_reason(exc: requests.RequestException, secrets: Sequence[str]) -> str:
    text = str(exc)
    for marker in ("Failed to establish a new connection: ", "Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = re.sub(r"<[^>]*>:?\s*", "", text).strip(" ()'\"")
    text = re.sub(r"with url: \S+", "", text)
    return redact(text or exc.__class__.__name__, secrets)


# --- the idcf-compute-api command ------------------------------------------------------------

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


def columns_for(rows: Sequence[Mapping[str, Any]], fields: str) -> list[str]:
    """The requested columns in the given order, or every key seen when none are given."""
    if fields:
        return [f.strip() for f in fields.split(",") if f.strip()]
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def cell(value: Any) -> str:
    """One table cell: scalars as text, structures as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                 headers: bool = True) -> str:
    """An ASCII table bordered like the 2013 walk-through (+----+------+)."""
    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c) if headers else 0] + [len(r[i]) for r in body])
              for i, c in enumerate(columns)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(values: Sequence[str]) -> str:
        return "|" + "|".join(f" {v.ljust(w)} " for v, w in zip(values, widths)) + "|"

    out = [rule]
    if headers:
        out += [line(columns), rule]
    out += [line(r) for r in body] + [rule]
    return "\n".join(out)


def format_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
               headers: bool = True) -> str:
    """The rows as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if headers:
        writer.writerow(columns)
    writer.writerows([cell(row.get(c)) for c in columns] for row in rows)
    return buffer.getvalue().rstrip("\n")


def build_parser() -> argparse.ArgumentParser:
    """The idcf-compute-api argument parser."""
    parser = argparse.ArgumentParser(
        prog="idcf-compute-api", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="API parameters: --name=value or name=value. Account: [account] host, api_key, "
               "secret_key in the config file, or CLOUDSTACK_ENDPOINT / CLOUDSTACK_KEY / "
               "CLOUDSTACK_SECRET. Exit codes: 0 ok, 1 API or transport error, "
               "2 usage or config error.")
    parser.add_argument("command", help="API command, e.g. listZones")
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $IDCFRC, else ~/.idcfrc)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("-t", "--table", nargs="?", const="", metavar="FIELDS",
                     help="ASCII table of these comma-separated fields (all when omitted)")
    out.add_argument("-c", "--csv", nargs="?", const="", metavar="FIELDS",
                     help="CSV of these comma-separated fields (all when omitted)")
    parser.add_argument("--noheaders", action="store_true", help="omit the header row")
    parser.add_argument("--wait", action="store_true",
                        help="for async commands: wait for the job and print its result")
    parser.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                        help="with --wait: how long to wait (default 900)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug log on stderr (secrets redacted)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def render(answer: dict, command: str, args: argparse.Namespace) -> tuple[str, Optional[str]]:
    """Text for stdout, and an optional note for stderr."""
    if args.table is None and args.csv is None:
        return json.dumps(answer, indent=2, ensure_ascii=False), None
    inner = unwrap(command, answer)
    if "jobresult" in inner:
        inner = inner["jobresult"] or {}
    rows = objects_of(inner)
    if not rows:
        note = f"no data: {command} returned an empty list"
        return (note, None) if args.table is not None else ("", note)
    fields = args.table if args.table is not None else args.csv
    columns = columns_for(rows, fields)
    if args.table is not None:
        return format_table(rows, columns, not args.noheaders), None
    return format_csv(rows, columns, not args.noheaders), None


def install_redacting_handler(stream: Any, formatter: logging.Formatter, verbose: bool,
                              secrets: Iterable[str] = ()) -> RedactingFilter:
    """Make one handler on `stream`, with every record passed through a redacting filter, the
    root logger's only handler (debug level when verbose, else warnings); returns the filter
    so that secrets learnt later can be added to it."""
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
    text, note = render(answer, args.command, args)
    if text:
        print(text)
    if note:
        print(note, file=sys.stderr)
    return 0


def closed_pipe() -> int:
    """Exit status 0 for output piped into a reader that stopped (e.g. head): it has what it
    wanted. Stdout goes to /dev/null so that the interpreter's final flush stays quiet."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of idcf-compute-api; returns the exit status."""
    prog = "idcf-compute-api"
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        own, params = split_api_params(words)
        args = build_parser().parse_args(own)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (code 2)
        return int(exc.code or 0)
    redactor = configure_logging(args.verbose)
    try:
        return run_command(args, params, redactor)
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (ApiError, TransportError, JobFailed, JobTimeout) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return closed_pipe()


if __name__ == "__main__":
    sys.exit(main())
