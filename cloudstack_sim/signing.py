"""Request signing as the management server verifies it (ApiServer.verifyRequest): Java URLEncoder
encoding, a case-sensitive sort, HMAC-SHA1, and signatureVersion 3 `expires`. Written from the
server's rules alone: the simulator is the independent oracle the client is tested against, so
this module imports nothing of ours."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Optional

__all__ = ["DEFAULT_API_KEY", "DEFAULT_SECRET_KEY", "compute_signature", "java_url_encode",
           "parse_expires", "verify_request"]

DEFAULT_API_KEY = "sim-api-key"
DEFAULT_SECRET_KEY = "sim-secret-key"

_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-*_")

# The forms DateUtil.parseTZDateString accepts for `expires` (see CLOUDSTACK-API.md section 1).
_DATE_TIME = r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})"
_EXPIRES_FORMS = (
    # ISO_OFFSET_DATE_TIME: seconds and fraction optional, offset Z or +hh:mm[:ss]
    re.compile(_DATE_TIME + r"(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2}(?::\d{2})?)"),
    # yyyy-MM-dd'T'HH:mm:ssZ
    re.compile(_DATE_TIME + r":(\d{2})()([+-]\d{4})"),
    # yyyy-MM-dd'T'HH:mm:ss.SSSSSSX and .SSSSSSZ
    re.compile(_DATE_TIME + r":(\d{2})\.(\d{6})(Z|[+-]\d{2}(?:\d{2})?)"),
    # legacy yyyy-MM-dd'T'HH:mm:ss'Z'Z
    re.compile(_DATE_TIME + r":(\d{2})()Z([+-]\d{4})"),
)


def java_url_encode(value: str) -> str:
    """Encode value like Java URLEncoder.encode(value, "UTF-8") with "+" replaced by "%20"."""
    return "".join(
        chr(b) if b in _URL_SAFE else "%20" if b == 0x20 else f"%{b:02X}"
        for b in value.encode("utf-8", "surrogatepass")
    )


def compute_signature(params: Mapping[str, str], secret_key: str) -> str:
    """Signature of params as the management server computes it (`signature` itself excluded)."""
    unsigned = "&".join(
        f"{name}={java_url_encode(params[name])}"
        for name in sorted(params) if name.lower() != "signature"
    )
    digest = hmac.new(secret_key.encode("utf-8"), unsigned.lower().encode("utf-8"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")


def _offset_seconds(text: str) -> int:
    if text == "Z":
        return 0
    digits = text[1:].replace(":", "")
    hours, minutes, seconds = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    total = hours * 3600 + minutes * 60 + seconds
    return -total if text[0] == "-" else total


def parse_expires(text: str) -> Optional[datetime]:
    """Parse `expires` in a form DateUtil.parseTZDateString accepts; None if none fits."""
    for form in _EXPIRES_FORMS:
        match = form.fullmatch(text)
        if match is None:
            continue
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        try:
            zone = timezone(timedelta(seconds=_offset_seconds(offset)))
            micros = int((fraction or "0")[:6].ljust(6, "0"))
            return datetime(int(year), int(month), int(day), int(hour), int(minute),
                            int(second or 0), micros, tzinfo=zone)
        except ValueError:
            return None
    return None


def verify_request(params: Mapping[str, str], secrets: Mapping[str, str], now: datetime) -> bool:
    """Check an API-key request like ApiServer.verifyRequest; secrets maps apiKey to secret key."""
    found: dict[str, str] = {}
    for name in sorted(params):
        if name.lower() in ("signature", "apikey", "signatureversion", "expires"):
            found[name.lower()] = params[name]
    signature, api_key = found.get("signature"), found.get("apikey")
    if signature is None or api_key is None:
        return False
    if found.get("signatureversion") == "3":
        expires = parse_expires(found.get("expires", ""))
        if expires is None or expires < now:
            return False
    secret = secrets.get(api_key)
    if secret is None:
        return False
    expected = compute_signature(params, secret)
    return hmac.compare_digest(expected.encode("utf-8"), signature.encode("utf-8"))
