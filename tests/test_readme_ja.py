"""README.ja.md keeps in step with README.md: every config key of sample.idcfrc, every option
and config section README.md names, the same headings and code blocks, and the links between them.
Text only: no network, no cloud, no SSH."""

import re
from pathlib import Path

from sshscale.config import ALIASES, KNOWN_KEYS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_JA = ROOT / "README.ja.md"
SAMPLE = ROOT / "sample.idcfrc"

# The sections ssh-scale reads: [account] (the API client's), [launch_config] (passed to
# deployVirtualMachine), both spellings of the scaling sections, the fleet sections and any
# [schedule NAME]. Any other section of a shared ~/.idcfrc is left alone, so its keys are not ours.
READ_SECTIONS = ({"account", "launch_config"}
                 | {name for spellings in ALIASES.values() for name in spellings}
                 | {name for name in KNOWN_KEYS if name not in ALIASES})
SECTION_LINE = re.compile(r"^(?:#\s*)?\[([^\]]+)\]\s*$")
# `key = value`, and the commented forms `# key = value`, `# optional: key = ...` and
# `# threshold: optional: key = ...` / `# target: optional: key = ...`.
KEY_LINE = re.compile(r"^(?:#\s*)?(?:(?:threshold|target):\s*)?(?:optional:\s*)?"
                      r"([a-z_]+)\s*=(?:\s|$)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9.-]*")
# A config section as the README names it: `[scalling]`, `[schedule NAME]`, `[notify] timeout`,
# an ini header in a code block; not a link text, `[0]` or `[min_size, max_size]`.
SECTION = re.compile(r"(?<![\w.])\[([a-z_]+(?: [A-Za-z_-]+)?)\](?!\()")
FENCE = re.compile(r"^\s*```")
HEADING = re.compile(r"^(#{2,3}) ")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def reads(section: str) -> bool:
    return section in READ_SECTIONS or section.startswith("schedule ")


def sample_keys() -> set[str]:
    keys, section = set(), None
    for line in read(SAMPLE).splitlines():
        header = SECTION_LINE.match(line.strip())
        if header:
            section = header.group(1).strip()
            continue
        key = KEY_LINE.match(line.strip())
        if key and section is not None and reads(section):
            keys.add(key.group(1))
    return keys


def mentions(text: str, word: str) -> bool:
    """`word` as a whole token: not part of a longer ASCII name (Japanese text may touch it)."""
    return re.search(rf"(?<![A-Za-z0-9_-]){re.escape(word)}(?![A-Za-z0-9_-])", text) is not None


def outside_fences(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def headings(text: str) -> dict[str, int]:
    counts = {"##": 0, "###": 0}
    for line in outside_fences(text):
        match = HEADING.match(line)
        if match:
            counts[match.group(1)] += 1
    return counts


def code_blocks(text: str) -> int:
    fences = sum(1 for line in text.splitlines() if FENCE.match(line))
    assert fences % 2 == 0, "an unclosed code block"
    return fences // 2


def test_the_sample_keys_are_found():
    keys = sample_keys()
    # commented defaults, policy-specific and fleet keys: the parser sees every form
    assert {"host", "api_key", "pass_phrase", "verify", "max_parallel", "group", "policy",
            "forecast", "stabilization", "check", "max_unhealthy", "cron", "timezone",
            "webhook", "events", "textfile"} <= keys, keys


def test_every_sample_key_is_in_both_readmes():
    keys = sample_keys()
    for path in (README, README_JA):
        text = read(path)
        missing = sorted(key for key in keys if not mentions(text, key))
        assert not missing, f"{path.name} does not mention {missing}"


def test_every_option_of_readme_is_in_readme_ja():
    options = {option.rstrip(".-") for option in OPTION.findall(read(README))}
    assert {"--config", "--dry-run", "--status", "--json", "--replay", "--start"} <= options
    text = read(README_JA)
    missing = sorted(option for option in options if not mentions(text, option))
    assert not missing, f"README.ja.md does not mention {missing}"


def test_every_config_section_of_readme_is_in_readme_ja():
    sections = set(SECTION.findall(read(README)))
    assert {"scalling", "monitoring", "health", "schedule NAME", "notify", "metrics"} <= sections
    text = read(README_JA)
    missing = sorted(section for section in sections if f"[{section}]" not in text)
    assert not missing, f"README.ja.md does not mention {missing}"


def test_same_headings_and_code_blocks():
    english, japanese = read(README), read(README_JA)
    assert headings(japanese) == headings(english)
    assert code_blocks(japanese) == code_blocks(english)


def test_each_readme_links_to_the_other():
    assert "日本語: [README.ja.md](README.ja.md)" in read(README).splitlines()[:5]
    assert "English: [README.md](README.md)" in read(README_JA).splitlines()[:5]
