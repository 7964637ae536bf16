"""Scale a CloudStack load-balancer pool by the load average read over SSH.

Run it from cron every minute. Each run reads ~/.idcfrc, measures the load of the
monitored web VM (or of every pool member) over SSH, reads the pool from the
CloudStack API, decides with one pure function, and makes at most one change:
deploy a VM and add it to the load balancer, or take one out and destroy it.
Crash leftovers of earlier runs are repaired from what the cloud knows.

  * * * * * /usr/bin/ssh_scale.py -c /etc/ssh-scale/web.idcfrc >> /var/log/ssh_scale-web.log 2>&1
"""

# The console script imports this module, and Ctrl-C or SIGTERM must end in one line from
# then on: so the module imports only what main() needs to print it (sshscale.interrupts);
# the API client, SSH and the rest are imported by the functions that use them.

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

from sshscale import __version__
from sshscale.interrupts import (
    ignore_sigterm,
    step,
    stopped_message,
    stopped_status,
    terminate_on_sigterm,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    import idcf_api
    from sshscale.errors import ExitStatus
    from sshscale.model import Report, Settings

__all__ = ["build_parser", "main"]

PROG = "ssh_scale.py"
REPLAY_ONLY = ("policy", "boot_seconds", "start", "format", "members")


def build_parser() -> argparse.ArgumentParser:
    """The ssh_scale.py argument parser."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 acted, nothing to do, or another run busy (--check: every check "
               "passed); 1 SSH, API or job failure (--check: a check failed); 2 usage or "
               "configuration error; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).")
    parser.add_argument("-c", "--config", metavar="PATH",
                        help="config file (default: $IDCFRC, else ~/.idcfrc)")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="measure and decide, but send no mutating API call")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="debug lines: SSH and API traffic (secrets redacted)")
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="print only actions and errors")
    views = parser.add_mutually_exclusive_group()
    views.add_argument("--status", action="store_true",
                       help="show the pool and the decision that would be taken; change nothing")
    views.add_argument("--json", action="store_true",
                       help="one JSON object per run on stdout; log lines go to stderr")
    views.add_argument("--check", action="store_true",
                       help="check, read-only, what a run needs: the config and key files, the "
                            "API and the clock, the IDs the config names, the commands a run "
                            "calls, SSH to the hosts; one line each; exit 1 if one fails")
    parser.add_argument("--replay", metavar="FILE", nargs="*",
                        help="what-if: replay load history through the decision code: a "
                             "minute,demand trace, sar -q reports (one per VM) or this tool's "
                             "--json logs")
    parser.add_argument("--journal", action="store_true",
                        help="with --replay (no FILE): replay this config's run journal")
    parser.add_argument("--history", action="store_true",
                        help="what the live runs of this config did, from its run journal: "
                             "actions, failures and holds (quiet runs summarised)")
    parser.add_argument("--since", metavar="WHEN",
                        help="with --history (default 24h) or --replay of --json logs or the "
                             "journal: only the runs since then: 90m, 24h, 7d or a time")
    parser.add_argument("--adopt", metavar="VM", nargs="+",
                        help="hand these existing VMs (id or name) over to the pool, one at a "
                             "time; with -n, only check them")
    parser.add_argument("--format", choices=("csv", "sar", "json"),
                        help="with --replay: the input's format (default: detected)")
    parser.add_argument("--members", type=int, metavar="N",
                        help="with --replay of one sar -q report: the VMs that shared the load")
    parser.add_argument("--policy", choices=("current", "classic", "threshold", "target"),
                        help="with --replay: this config's policy (default), the 2013 tool's, "
                             "or this config with [scalling] policy = threshold or target")
    parser.add_argument("--plot", metavar="PNG",
                        help="with --replay: draw the replay; with --history: the runs")
    parser.add_argument("--boot-seconds", type=float, metavar="S",
                        help="with --replay: seconds before a new VM serves (default 150)")
    parser.add_argument("--start", metavar="TIME",
                        help="with --replay: the time of the trace's minute 0, for schedules "
                             "(e.g. '2026-12-01 00:00', in this machine's zone)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def check_options(args: argparse.Namespace) -> None:
    """Options that only make sense together; raises ConfigError."""
    from sshscale.errors import ConfigError

    replaying = args.replay is not None
    modes = [name for name, on in (("--replay", replaying), ("--history", args.history),
                                   ("--adopt", args.adopt is not None),
                                   ("--check", args.check), ("--status", args.status)) if on]
    if len(modes) > 1:
        raise ConfigError(f"{modes[0]} and {modes[1]} do not go together")
    if (replaying or args.history) and (args.status or args.dry_run):
        raise ConfigError(f"{modes[0]} runs offline: it cannot be combined with --status or -n")
    if args.check and args.dry_run:
        raise ConfigError("--check changes nothing already: it cannot be combined with -n")
    if args.json and (args.history or args.adopt is not None):
        raise ConfigError(f"{modes[0]} prints no --json object")
    if not replaying and any(getattr(args, name) is not None for name in REPLAY_ONLY):
        raise ConfigError("--policy, --boot-seconds, --start, --format and --members "
                          "go with --replay")
    if not (replaying or args.history) and (args.plot is not None or args.since is not None):
        raise ConfigError("--plot and --since go with --replay or --history")
    if args.journal != (replaying and not args.replay):
        raise ConfigError("--replay takes FILEs, or --journal (this config's run journal)")


def offline_settings(args: argparse.Namespace, redactor: idcf_api.RedactingFilter) -> Settings:
    """The config for a replay or the history, which never connect: neither ~/.ssh/config
    nor the key is read."""
    from sshscale.config import load_settings

    settings = load_settings(args.config, check_key=False)
    redactor.add(settings.account.api_key, settings.account.secret_key, settings.pass_phrase)
    return settings


def replay(args: argparse.Namespace, redactor: idcf_api.RedactingFilter) -> ExitStatus:
    """--replay: offline; neither ~/.ssh/config nor SSH is touched. With --journal, the
    config's run journal (the last 31 days of it, or --since)."""
    with step("while starting", changing=False):
        from datetime import datetime, timedelta, timezone

        import idcf_api
        from sshscale.errors import ExitStatus
        from sshscale.history import parse_since
        from sshscale.journal import require_files
        from sshscale.replay import MAX_MINUTES, run_replay

        settings = offline_settings(args, redactor)
        now = datetime.now(timezone.utc)
        if args.journal:
            files = require_files(idcf_api.config_path(args.config))
            since = now - timedelta(minutes=MAX_MINUTES - 1)
        else:
            files, since = args.replay, None
        if args.since is not None:
            since = parse_since(args.since, now)
    with step("during the replay", changing=False):
        run_replay(settings, files, policy=args.policy, plot=args.plot,
                   boot_seconds=args.boot_seconds, as_json=args.json, start=args.start,
                   fmt="json" if args.journal else args.format, members=args.members,
                   since=since)
    return ExitStatus.OK


def history(args: argparse.Namespace, redactor: idcf_api.RedactingFilter) -> ExitStatus:
    """--history: the config's run journal as a table (and a plot); offline."""
    with step("while starting", changing=False):
        from datetime import datetime, timezone

        import idcf_api
        from sshscale.errors import ExitStatus
        from sshscale.history import show_history

        settings = offline_settings(args, redactor)
    with step("while reading the run journal", changing=False):
        show_history(settings, idcf_api.config_path(args.config), args.since, args.plot,
                     datetime.now(timezone.utc))
    return ExitStatus.OK


def adopt(args: argparse.Namespace, redactor: idcf_api.RedactingFilter) -> ExitStatus:
    """--adopt VM...: hand existing VMs over to the pool (with -n, only check them)."""
    with step("while starting", changing=False):
        from datetime import datetime, timezone

        import idcf_api
        from sshscale.adopt import adopt as adopt_vms
        from sshscale.config import load_settings
        from sshscale.errors import ExitStatus
        from sshscale.measure import read_ssh_config

        ssh_config = read_ssh_config()
        settings = load_settings(args.config, ssh_config=ssh_config, check_key=False)
        redactor.add(settings.account.api_key, settings.account.secret_key,
                     settings.pass_phrase)
        path = idcf_api.config_path(args.config)
        warn_config(path, aside=False)
    adopt_vms(settings, idcf_api.Client(settings.account), args.adopt, path,
              ssh_config=ssh_config, dry_run=args.dry_run,
              clock=lambda: datetime.now(timezone.utc))
    return ExitStatus.OK


def live(args: argparse.Namespace, redactor: idcf_api.RedactingFilter) -> ExitStatus:
    """One run against the cloud; the report is printed (--status, --json) even when the
    run fails, then the failure is raised for run_command() to map. After a live run (not a
    read-only look, nor a run that found another busy), its outputs: notify and metrics."""
    with step("while starting", changing=False):
        import contextlib
        import logging
        import time
        from datetime import datetime, timezone

        import idcf_api
        from sshscale.config import load_settings
        from sshscale.errors import ExitStatus, LeaseBusy, LockBusy, SshError, message_of
        from sshscale.lease import monitor_name
        from sshscale.logs import note
        from sshscale.measure import read_ssh_config
        from sshscale.model import Report
        from sshscale.notify import webhook_secrets
        from sshscale.preflight import check_launch, explain
        from sshscale.run import finish_pending, other_run_on_this_monitor, run_lock, run_once

        ssh_config = read_ssh_config()
        settings = load_settings(args.config, ssh_config=ssh_config)
        redactor.add(settings.account.api_key, settings.account.secret_key,
                     settings.pass_phrase)
        redactor.add(*webhook_secrets(settings))
        path = idcf_api.config_path(args.config)
        warn_config(path, args.status)
        monitor_name()  # a bad $SSH_SCALE_MONITOR is a config error before anything is sent
    read_only = args.dry_run or args.status
    report = Report(time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    dry_run=read_only)
    started = time.monotonic()
    client = idcf_api.Client(settings.account)
    try:
        try:
            # A read-only look needs no lock: it must work while a scale-out is under way.
            with contextlib.nullcontext() if read_only else run_lock(path):
                run_once(settings, client, report, ssh_config=ssh_config,
                         other_run=other_run_on_this_monitor(path) if read_only else None)
            if args.dry_run:  # a deploy's IDs, checked before the live run needs them
                check_launch(settings, client, path)
        except SshError:  # raised after any min/max action, whose deploys still need finishing
            finish_pending(settings, client, report)
            raise
        finish_pending(settings, client, report)  # a target scale-out's, without the lock
    except LockBusy as exc:
        note("lease" if isinstance(exc, LeaseBusy) else "lock", f"{exc}; exiting",
             logging.WARNING)
        report.result = f"skipped: {exc}"
        emit(report, args)  # the run that holds it writes the outputs when it ends
        return ExitStatus.OK
    except BaseException as exc:
        named = explain(exc, settings, client, path)  # a refused parameter: the key to change
        report.error = idcf_api.redact(message_of(named or exc), redactor.secrets)
        emit(report, args)
        if not (read_only or _ctrl_c(exc)):  # SIGTERM (a systemd timeout) is a failure to tell
            after_run(report, settings, time.monotonic() - started, redactor.secrets, path)
        if named is not None:
            raise named from exc
        raise
    emit(report, args)
    if not read_only:
        after_run(report, settings, time.monotonic() - started, redactor.secrets, path)
    return ExitStatus.OK


def _ctrl_c(exc: BaseException) -> bool:
    from sshscale.interrupts import Terminated

    return isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Terminated)


def after_run(report: Report, settings: Settings, duration: float,
              secrets: Sequence[str], config: str) -> None:
    """The live run's outputs besides the log: the run journal, and, each off unless
    configured, [notify] and the [metrics] textfile. They run after the run, cannot change it
    and never raise."""
    import time

    from sshscale import journal, metrics, notify
    from sshscale.lease import monitor_name

    journal.append(report, config)
    notify.send(report, settings, monitor_name(), secrets)
    metrics.write(report, settings, duration, time.time())


def warn_config(path: str, aside: bool) -> None:
    """The config's warnings, one line each: readable by others (it holds secrets), a
    misspelt section, a " #" in a value. In the log; `aside` (a view that logs nothing, such
    as --status): on stderr."""
    import logging

    from sshscale.config import config_warnings, display_path, insecure_permissions
    from sshscale.logs import note

    lines = [f"{display_path(path)} is readable by group or others; it holds secrets (chmod "
             "600 it)"] if insecure_permissions(path) else []
    for line in lines + config_warnings(path):
        if aside:
            print(f"{PROG}: warning: {line}", file=sys.stderr)
        else:
            note("warning", line, logging.WARNING)


def check(args: argparse.Namespace, redactor: idcf_api.RedactingFilter) -> ExitStatus:
    """--check: every finding on its own line as it is made; exit 1 when one failed."""
    with step("while starting", changing=False):
        import idcf_api
        from sshscale.config import load_settings
        from sshscale.errors import ExitStatus, ScaleError
        from sshscale.measure import read_ssh_config
        from sshscale.preflight import line, run_checks

        ssh_config = read_ssh_config()
        settings = load_settings(args.config, ssh_config=ssh_config)
        redactor.add(settings.account.api_key, settings.account.secret_key,
                     settings.pass_phrase)
        path = idcf_api.config_path(args.config)
    with step("during the checks", changing=False):
        findings = []
        for finding in run_checks(settings, idcf_api.Client(settings.account), ssh_config, path):
            print(idcf_api.redact(line(finding), redactor.secrets), flush=True)
            findings.append(finding)
    failed = [f.topic for f in findings if f.failed]
    if failed:
        raise ScaleError(f"{len(failed)} of {len(findings)} checks failed: "
                         f"{', '.join(dict.fromkeys(failed))}")
    return ExitStatus.OK


def emit(report: Report, args: argparse.Namespace) -> None:
    """Print the --status table or the --json object, if asked."""
    import json

    from sshscale.views import report_json, status_table

    if args.status:
        print(status_table(report))
    if args.json:
        print(json.dumps(report_json(report)))


def run_command(args: argparse.Namespace, redactor: idcf_api.RedactingFilter) -> int:
    """A live run or a replay: the one place that maps every failure but an interruption to
    its exit status and one line."""
    with step("while starting", changing=False):
        import idcf_api
        from sshscale import logs
        from sshscale.errors import exit_status, expected, message_of
    try:
        check_options(args)
        if args.replay is not None:
            return replay(args, redactor)
        if args.history:
            return history(args, redactor)
        if args.check:
            return check(args, redactor)
        return adopt(args, redactor) if args.adopt is not None else live(args, redactor)
    except BrokenPipeError:  # e.g. --json piped into head
        return idcf_api.closed_pipe()
    except Exception as exc:
        if not expected(exc):
            logs.log.debug("unexpected error", exc_info=True)
        print(f"{PROG}: error: {idcf_api.redact(message_of(exc), redactor.secrets)}",
              file=sys.stderr)
        return exit_status(exc)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: one run or one replay; returns the exit status. Ctrl-C or SIGTERM at any
    point, the imports included, ends in one line saying what it interrupted."""
    try:
        terminate_on_sigterm()
        with step("while starting", changing=False):
            args = build_parser().parse_args(argv)
            from sshscale import logs

            aside = args.status or args.check  # views that print their own lines
            redactor = logs.configure(args.verbose, args.quiet,
                                      sys.stderr if args.json or aside else sys.stdout,
                                      silent=aside)
        status = run_command(args, redactor)
        if argv is None:  # the program itself (not a caller such as a test): it ends now
            ignore_sigterm()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        if argv is None:
            ignore_sigterm()
        print(f"{PROG}: error: {stopped_message(exc)}", file=sys.stderr)
        status = stopped_status(exc)
    return status
