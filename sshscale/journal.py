"""The run journal: every live run appends its --json object, as one line, to a file of its
own config in the XDG state directory ($XDG_STATE_HOME, else ~/.local/state)/ssh-scale/.
When the file would pass FILE_BYTES it is compressed into <file>.1.gz (the older ones move up
to .2.gz ..., the oldest past ROTATED_FILES dropped) and emptied: quiet runs' lines compress
about 40 times, so months of runs take a few MiB (figures in the README and BENCHMARKS.md).
An output of the finished Report, like the metrics textfile: nothing decides on it (decisions
read only the cloud), and a journal that cannot be written is one warning line, never a failed
or slower run. `--history` and `--replay --journal` read it. (A run killed between a
rotation's compressed file and the emptying of the current one leaves those lines twice.)
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from typing import Optional

from sshscale.config import config_digest, display_path
from sshscale.errors import ScaleError
from sshscale.logs import note
from sshscale.model import Report
from sshscale.views import report_json

__all__ = ["COMPRESS_LEVEL", "FILE_BYTES", "ROTATED_FILES", "JournalMissing", "append", "encode",
           "existing_files", "journal_path", "require_files", "state_dir"]

# A quiet run of a pool of 4 VMs writes 1.5 kB, of 16 VMs 5 kB (bench/bench_journal.py):
# 20 files of 16 MiB of lines hold 335 MB of them, six weeks of runs of 16 VMs once a minute.
FILE_BYTES = 16 * 1024 * 1024
ROTATED_FILES = 20
COMPRESS_LEVEL = 1  # 40x on quiet runs' lines, 0.04 s for 16 MiB (6: 57x, 0.15 s)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class JournalMissing(ScaleError):
    """No journal for the config: no live run of it by this user has written one yet."""


def state_dir(environ: Optional[Mapping[str, str]] = None) -> str:
    """Where journals live: $XDG_STATE_HOME/ssh-scale (an absolute path; the XDG spec
    ignores a relative one), else ~/.local/state/ssh-scale."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "ssh-scale")


def journal_path(config: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """The journal of a config: <state dir>/<its file name>-<hash of its real path>.jsonl,
    the same for cron, systemd and a login shell (as the lock's name)."""
    stem = _UNSAFE.sub("_", os.path.basename(os.path.realpath(config))).lstrip(".") or "config"
    return os.path.join(state_dir(environ), f"{stem}-{config_digest(config)}.jsonl")


def existing_files(path: str) -> list[str]:
    """The journal's files that exist, oldest first: path.N.gz, ..., path.1.gz, path."""
    names = [f"{path}.{n}.gz" for n in range(ROTATED_FILES, 0, -1)] + [path]
    return [name for name in names if os.path.isfile(name)]


def require_files(config: str, environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """The journal files of a config, oldest first; raises JournalMissing naming where they
    were looked for."""
    path = journal_path(config, environ)
    files = existing_files(path)
    if not files:
        raise JournalMissing(f"no journal for {display_path(config)} at {display_path(path)}: "
                             "live runs of this config write it (run this as the user who "
                             "runs the config from cron or systemd, with the same "
                             "$XDG_STATE_HOME)")
    return files


def encode(report: Report) -> bytes:
    """The report's --json object as one compact line."""
    return (json.dumps(report_json(report), separators=(",", ":"), ensure_ascii=False)
            + "\n").encode("utf-8")


def append(report: Report, config: str, environ: Optional[Mapping[str, str]] = None,
           file_bytes: int = FILE_BYTES) -> None:
    """Append the finished run to its config's journal, rotating it first when the line would
    take it past file_bytes; never raises (a journal that cannot be written is a warning)."""
    path = journal_path(config, environ)
    try:
        _append_line(path, encode(report), file_bytes)
    except OSError as exc:
        note("journal", f"cannot write {display_path(path)}: {exc.strerror or exc} (the run is "
                        "not affected)", logging.WARNING)


def _append_line(path: str, line: bytes, file_bytes: int) -> None:
    """One write of a whole line under an flock of the file, so that two runs finishing
    together neither interleave nor rotate twice (the file is emptied, never renamed)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and size + len(line) > file_bytes:
            _rotate(fd, path)
            size = 0
        _write_whole(fd, line, size)
    finally:
        os.close(fd)


def _write_whole(fd: int, line: bytes, size: int) -> None:
    """Write the line whole or not at all: a short write (a full disk) is cut off again, so
    that readers never meet half a line."""
    try:
        written = 0
        while written < len(line):
            written += os.write(fd, line[written:])
    except OSError:
        os.ftruncate(fd, size)
        raise


def _rotate(fd: int, path: str) -> None:
    """The file (open as fd, locked) compressed into path.1.gz, the older ones moved up
    (path.1.gz -> path.2.gz ...; the oldest dropped), then emptied."""
    temporary = f"{path}.1.gz.tmp"
    with open(path, "rb") as source, \
            open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=COMPRESS_LEVEL) as target:
        shutil.copyfileobj(source, target)
    for number in range(ROTATED_FILES - 1, 0, -1):
        if os.path.exists(f"{path}.{number}.gz"):
            os.replace(f"{path}.{number}.gz", f"{path}.{number + 1}.gz")
    os.replace(temporary, f"{path}.1.gz")
    os.ftruncate(fd, 0)
