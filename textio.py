"""Text in and out, shared by the API client (idcf_api) and the commands built on it without
needing it (the replay): reading a text file with a one-line reason when it cannot be read,
a "did you mean" hint, and the ASCII table and CSV renderings. Imports nothing of ours."""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["UnreadableFile", "cell", "did_you_mean", "format_csv", "format_table", "read_text"]


class UnreadableFile(Exception):
    """A text file could not be read; the message names the file and why."""


def read_text(path: str, expected: str, encoding: str = "utf-8") -> str:
    """A text file's content (expected: what it should be, for the message); raises
    UnreadableFile naming the file when it cannot be read."""
    try:
        with open(path, encoding=encoding) as handle:
            return handle.read()
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: no such file") from None
    except PermissionError:
        raise UnreadableFile(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise UnreadableFile(f"{path}: is a directory") from None
    except UnicodeDecodeError:
        raise UnreadableFile(f"{path}: not a text file (expected {expected})") from None


def did_you_mean(word: str, choices: Iterable[str], most: int = 1) -> str:
    """A ' (did you mean X?)' hint naming up to `most` choices about as close as the best."""
    by_lower = {choice.lower(): choice for choice in choices}
    scored = sorted(((difflib.SequenceMatcher(None, word.lower(), c).ratio(), c)
                     for c in by_lower), reverse=True)
    close = [by_lower[c] for score, c in scored[:most]
             if score >= max(0.6, scored[0][0] - 0.1)]
    return f" (did you mean {' or '.join(close)}?)" if close else ""


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
