"""API errors and the parameter checks every command shares: required and known values,
integers, booleans, dates, and paging (BaseListCmd) with the server's exact error texts."""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import datetime, timezone
from typing import Any, Optional

__all__ = ["ApiError", "InvalidParameter", "integer", "invalid_value", "is_true", "known",
           "missing_parameter", "page", "parse_date", "required", "tag_filter", "tag_pairs"]

_TAG_PARAM = re.compile(r"tags\[(\d+)\]\.(key|value)")


class ApiError(Exception):
    """An API error: a sync answer's HTTP status (== errorcode) and body, or a failed job's
    result."""

    def __init__(self, code: int, text: str, cserrorcode: Optional[int] = 9999) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.cserrorcode = cserrorcode

    def body(self, envelope: str) -> dict[str, Any]:
        """The error answer inside envelope, keys in the server's order."""
        inner: dict[str, Any] = {"uuidList": [], "errorcode": self.code}
        if self.cserrorcode is not None:
            inner["cserrorcode"] = self.cserrorcode
        inner["errortext"] = self.text
        return {envelope: inner}


class InvalidParameter(ApiError):
    """An InvalidParameterValueException: 431 when answered at once; inside a job, what the
    server's job dispatcher makes of it (versions.Server.job_failure)."""

    def __init__(self, text: str) -> None:
        super().__init__(431, text, 4350)


def invalid_value(command: str, name: str, value: str) -> ApiError:
    """The 431 for a uuid that names nothing (or a malformed number)."""
    return ApiError(431, f"Unable to execute API command {command} due to invalid value. "
                         f"Invalid parameter {name} value={value} due to incorrect long value "
                         "format, or entity does not exist or due to incorrect parameter "
                         "annotation for the field in api cmd class.")


def missing_parameter(command: str, name: str) -> ApiError:
    """The 431 for a required parameter that is absent or empty."""
    return ApiError(431, f"Unable to execute API command {command} due to missing parameter "
                         f"{name}")


def required(command: str, params: dict[str, str], name: str) -> str:
    """params[name]; the 431 "missing parameter" when it is absent or empty."""
    value = params.get(name, "")
    if value == "":
        raise missing_parameter(command, name)
    return value


def known(command: str, name: str, value: str, choices: Container[str]) -> str:
    """value if it is one of choices, else the 431 invalid value."""
    if value not in choices:
        raise invalid_value(command, name, value)
    return value


def integer(command: str, name: str, value: str) -> int:
    """value as an int, else the 431 invalid value."""
    try:
        return int(value)
    except ValueError:
        raise invalid_value(command, name, value) from None


def is_true(value: Optional[str], default: bool) -> bool:
    """A boolean parameter as Java Boolean.valueOf reads it: only "true" (any case) is true."""
    return default if value is None else value.lower() == "true"


def parse_date(command: str, value: str, tz: timezone) -> int:
    """A listEvents date (yyyy-MM-dd[ HH:mm:ss] in the cloud's timezone) as epoch seconds."""
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(value, pattern).replace(tzinfo=tz).timestamp())
        except ValueError:
            continue
    raise ApiError(431, f"Unable to parse date {value} for command {command}, please pass "
                        "dates in the format mentioned in the api documentation")


def page(command: str, params: dict[str, str], items: list[dict], key: str,
         page_size: int) -> dict[str, Any]:
    """One page of items under key with the total in `count` ({} when there are none)."""
    page_text, size_text = params.get("page"), params.get("pagesize")
    if size_text is None and page_text is not None:
        raise ApiError(431, '"pagesize" parameter is required when "page" is specified')
    number = integer(command, "page", page_text) if page_text is not None else None
    size = integer(command, "pagesize", size_text) if size_text is not None else page_size
    if number is None and size != -1 and size_text is not None:
        raise ApiError(431, '"page" parameter is required when "pagesize" is specified')
    if size > page_size:
        raise ApiError(431, f"Page size can't exceed max allowed page size value: {page_size}",
                       4350)
    if size == -1 and number is not None:
        raise ApiError(431, "Can't specify page parameter when pagesize is -1 (Unlimited)", 4350)
    if not items:
        return {}
    if size == -1:
        shown = items
    else:
        start = size * (number - 1) if number is not None and number > 0 else 0
        shown = items[start:start + max(size, 0)]
    return {"count": len(items), key: shown} if shown else {"count": len(items)}


def tag_pairs(params: dict[str, str]) -> list[tuple[str, Optional[str]]]:
    """The tags[n].key / tags[n].value map as (key, value or None) pairs in index order."""
    entries: dict[int, dict[str, str]] = {}
    for name, value in params.items():
        match = _TAG_PARAM.fullmatch(name)
        if match:
            entries.setdefault(int(match[1]), {})[match[2]] = value
    return [(entry["key"], entry.get("value")) for _, entry in sorted(entries.items())
            if "key" in entry]


def tag_filter(params: dict[str, str]) -> list[tuple[str, str]]:
    """A list command's tag filter; 431/4350 for a key without a value
    (TaggedResources.parseKeyValueMap)."""
    pairs = tag_pairs(params)
    for key, value in pairs:
        if value is None:
            raise ApiError(431, f"No value is passed in for key {key}", 4350)
    return [(key, value or "") for key, value in pairs]
