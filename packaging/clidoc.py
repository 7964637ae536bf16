"""Man pages and bash completions of the three commands, generated from their argparse parsers
at build time (packaging/install-tree), so that an option added to a parser is in both with
nothing to copy by hand:

    python3 packaging/clidoc.py MANDIR COMPLETIONDIR

writes MANDIR/<command>.1 and COMPLETIONDIR/<command> for ssh_scale.py, idcf-compute-api and
cloudstack-sim. It imports the parsers from this source tree: the Python that runs it needs
what those modules import (requests, for idcf_api; Debian: python3-requests). The dates come
from SOURCE_DATE_EPOCH when it is set (reproducible builds).

The argparse attributes read here (_actions, _action_groups, ...) are private but stable
since Python 3.2; argparse-manpage and shtab read the same ones.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
WIDTH = "78"  # argparse wraps the usage at $COLUMNS: the same synopsis on every machine
# options whose value is a file (by their metavar): completed with file names
FILE_METAVARS = ("PATH", "FILE", "PNG")
README = "/usr/share/doc/ssh-scale/README.md"


def _api_command_names() -> Sequence[str]:
    import cloudstack_commands

    return sorted(cloudstack_commands.NAMES)


# command -> (the module of its build_parser(), the words its first positional completes to)
COMMANDS: dict[str, tuple[str, Optional[Callable[[], Sequence[str]]]]] = {
    "ssh_scale.py": ("sshscale.cli", None),
    "idcf-compute-api": ("idcf_api", _api_command_names),
    "cloudstack-sim": ("cloudstack_sim.cli", None),
}


def build_parser(command: str) -> argparse.ArgumentParser:
    """The command's parser, from this source tree."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ["COLUMNS"] = WIDTH
    module = importlib.import_module(COMMANDS[command][0])
    return module.build_parser()


def shown(actions: Iterable[argparse.Action]) -> list[argparse.Action]:
    return [a for a in actions if a.help != argparse.SUPPRESS]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands (cloudstack-sim load), by name."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def value_syntax(action: argparse.Action) -> str:
    """What follows an option: '', 'PATH', '[FIELDS]', 'FILE [FILE ...]', '{csv,sar}'."""
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        name = str(action.metavar)
    elif action.choices is not None:
        name = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        name = action.dest.upper() if action.option_strings else action.dest
    return {"?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} [{name} ...]"}.get(
        str(action.nargs), name)


def help_text(action: argparse.Action, prog: str) -> str:
    """The action's help with argparse's %(default)s-style fields filled in."""
    text = action.help or ""
    if "%(" in text:
        fields = dict(vars(action), prog=prog)
        if fields.get("choices") is not None:
            fields["choices"] = ", ".join(map(str, fields["choices"]))
        text = text % fields
    return text


# --- man pages --------------------------------------------------------------------------


def roff(text: str) -> str:
    """Text safe in a man page: backslashes escaped, no line taken for a request."""
    text = text.replace("\\", "\\e")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def bold_options(text: str) -> str:
    return re.sub(r"(?<![\w-])(--?[A-Za-z][\w-]*)",
                  lambda m: "\\fB" + m.group(1).replace("-", "\\-") + "\\fR", text)


def paragraphs(text: str) -> list[str]:
    """A description (raw, as written) as man paragraphs: runs of indented lines (examples)
    stay literal, the other lines are filled."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        for indented, run in itertools.groupby(block.split("\n"),
                                               key=lambda line: line.startswith((" ", "\t"))):
            lines = [line.strip() if not indented else line for line in run]
            if indented:
                width = min(len(line) - len(line.lstrip()) for line in lines)
                out.append(".PP\n.RS 4\n.nf\n" + roff("\n".join(line[width:] for line in lines))
                           + "\n.fi\n.RE")
            else:
                out.append(".PP\n" + bold_options(roff(" ".join(lines))))
    return out


def option_entries(actions: Iterable[argparse.Action], prog: str) -> list[str]:
    out = []
    for action in shown(actions):
        if isinstance(action, argparse._SubParsersAction):
            continue
        value = value_syntax(action)
        if action.option_strings:
            names = ", ".join("\\fB" + o.replace("-", "\\-") + "\\fR"
                              for o in action.option_strings)
            head = names + (f" \\fI{roff(value)}\\fR" if value else "")
        else:
            head = f"\\fI{roff(value)}\\fR"
        out.append(f".TP\n{head}\n{bold_options(roff(help_text(action, prog)))}")
    return out


def usage(parser: argparse.ArgumentParser) -> str:
    text = parser.format_usage().strip()
    text = re.sub(r"^usage: ", "", text)
    lines = [line.strip() for line in text.split("\n")]
    prog, _, rest = lines[0].partition(" ")
    body = "\n".join([rest, *lines[1:]]).strip()
    return f".nf\n\\fB{roff(prog)}\\fR {roff(body).replace('-', chr(92) + '-')}\n.fi"


def option_sections(parser: argparse.ArgumentParser) -> list[str]:
    prog = parser.prog
    out = [".SH OPTIONS"]
    defaults = (parser._positionals, parser._optionals)
    for group in parser._action_groups:
        entries = option_entries(group._group_actions, prog)
        if not entries:
            continue
        if group not in defaults:
            out.append(f".SS {roff(group.title or '')}")
            if group.description:
                out.append(roff(group.description))
        out += entries
    return out


def manual(command: str, parser: argparse.ArgumentParser, version: str, date: str) -> str:
    """The man page (section 1) of one command, in man(7) roff."""
    first, _, others = (parser.description or command).strip().partition("\n\n")
    summary, _, more = " ".join(line.strip() for line in first.split("\n")).partition(". ")
    summary = re.sub(r"^[\w.-]+: ", "", summary).rstrip(".")
    rest = (more + "\n\n" + others).strip()
    out = [
        f'.\\" Generated by packaging/clidoc.py from the argument parser of {command}.',
        f'.TH "{command.upper()}" "1" "{date}" "ssh-scale {version}" "User Commands"',
        ".SH NAME", f"{roff(command)} \\- {roff(summary)}",
        ".SH SYNOPSIS", usage(parser),
    ]
    if rest.strip():
        out += [".SH DESCRIPTION", *paragraphs(rest)]
    out += option_sections(parser)
    commands = subcommands(parser)
    if commands:
        out.append(".SH COMMANDS")
        for name, sub in commands.items():
            out += [f".SS {roff(name)}", usage(sub)]
            if sub.description:
                out += paragraphs(sub.description)
            out += option_entries(sub._actions, sub.prog)
    if parser.epilog:
        out += [".SH NOTES", *paragraphs(parser.epilog)]
    others = [f"\\fB{roff(c)}\\fR(1)" for c in COMMANDS if c != command]
    out += [".SH SEE ALSO", ",\n".join(others) + ";",
            f"the manual: {README} (the source tree's README.md)."]
    return "\n".join(out) + "\n"


# --- bash completion ----------------------------------------------------------------------


def option_words(actions: Iterable[argparse.Action]) -> list[str]:
    return [o for a in shown(actions) for o in a.option_strings]


def value_options(actions: Iterable[argparse.Action]) -> dict[str, list[str]]:
    """The options that must be followed by a value, by what completes it: "files", "value"
    (nothing to offer), or the words of their choices."""
    kinds: dict[str, list[str]] = {}
    for action in shown(actions):
        if not action.option_strings or action.nargs in (0, "?"):
            continue
        if action.choices is not None:
            kind = " ".join(map(str, action.choices))
        else:
            kind = "files" if str(action.metavar) in FILE_METAVARS else "value"
        kinds.setdefault(kind, [])
        kinds[kind] += [o for o in action.option_strings if o not in kinds[kind]]
    return kinds


def value_cases(kinds: dict[str, list[str]]) -> list[str]:
    """case branches for the word before the cursor: an option that takes a value."""
    cases = []
    for kind, options in kinds.items():
        pattern = "|".join(options)
        if kind == "files":
            cases.append(f"        {pattern})\n"
                         "            compopt -o filenames 2>/dev/null\n"
                         '            mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return;;')
        elif kind == "value":
            cases.append(f"        {pattern}) return;;  # a value: nothing to offer")
        else:
            cases.append(f"        {pattern})\n"
                         f'            mapfile -t COMPREPLY < <(compgen -W "{kind}" -- "$cur"); '
                         "return;;")
    return cases


def completion(command: str, parser: argparse.ArgumentParser) -> str:
    """A bash completion script for the command (bash-completion loads it by its name)."""
    function = "_ssh_scale_" + re.sub(r"\W", "_", command)
    commands = subcommands(parser)
    all_actions = list(parser._actions) + [a for sub in commands.values() for a in sub._actions]
    kinds = value_options(all_actions)
    takes_value = [option for options in kinds.values() for option in options]
    positional_words = COMMANDS[command][1]
    if commands:
        first = " ".join(commands)
    elif positional_words is not None:
        first = " ".join(positional_words())
    else:
        first = ""
    lines = [
        f"# bash completion for {command}; generated by packaging/clidoc.py from its argument",
        "# parser (installed as /usr/share/bash-completion/completions/" + command + ")",
        f"{function}() {{",
        '    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} i',
        '    local sub="" words=' + f'"{" ".join(option_words(parser._actions))}"',
        '    if [[ $prev == = && $COMP_CWORD -gt 1 ]]; then prev=${COMP_WORDS[COMP_CWORD-2]}; fi',
        '    [[ $cur == = ]] && cur=""',
        "    case $prev in",
        *value_cases(kinds),
        "    esac",
        "    # the first word that is neither an option nor an option's value: the command",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        case ${COMP_WORDS[i]} in",
        f"            {'|'.join(takes_value)})",
        '                [[ ${COMP_WORDS[i+1]} == = ]] && ((i++)); ((i++));;',
        "            -*) ;;",
        '            *) [[ -n $sub ]] || sub=${COMP_WORDS[i]};;',
        "        esac",
        "    done",
    ]
    for name, sub in commands.items():
        lines.append(f'    [[ $sub == {name} ]] && words="{" ".join(option_words(sub._actions))}"')
    lines += [
        '    if [[ $cur == -* ]]; then',
        '        mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")',
    ]
    if first:
        lines += [
            '    elif [[ -z $sub ]]; then',
            f'        mapfile -t COMPREPLY < <(compgen -W "{first}" -- "$cur")',
        ]
    lines += [
        "    else",
        "        compopt -o filenames 2>/dev/null",
        '        mapfile -t COMPREPLY < <(compgen -f -- "$cur")',
        "    fi",
        "}",
        f"complete -F {function} {command}",
    ]
    return "\n".join(lines) + "\n"


def build_date() -> str:
    stamp = float(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    return time.strftime("%Y-%m-%d", time.gmtime(stamp))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("mandir", type=Path)
    args.add_argument("completiondir", type=Path)
    where = args.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from sshscale import __version__

    for folder in (where.mandir, where.completiondir):
        folder.mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        parser = build_parser(command)
        (where.mandir / f"{command}.1").write_text(
            manual(command, parser, __version__, build_date()), encoding="utf-8")
        (where.completiondir / command).write_text(completion(command, parser),
                                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
