"""The packages (make deb, make rpm), the systemd units and the install documentation: what is
in each package (cronsim with its licence, man pages and completions generated from the
parsers, md5sums), what it depends on, that nothing gets enabled and purge forgets enabled
timers, that the service unit is sandboxed, and that every scheduled command is an absolute
path (cron's PATH has no ~/.local/bin)."""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sshscale import __version__

ROOT = Path(__file__).resolve().parent.parent
BUILD_SECONDS = 120
LIB = "/usr/share/ssh-scale"
DOC = "/usr/share/doc/ssh-scale"
UNITS = ("ssh_scale@.service", "ssh_scale@.timer")
MAN = "/usr/share/man/man1"
COMPLETIONS = "/usr/share/bash-completion/completions"
VENDOR = ROOT / "packaging" / "vendor"
WC98_FILES = ("SOURCE.md", "wc98_1998-06-28_3d.csv", "WorldCup.html",
              "COPYRIGHT-ITA-WorldCup98-tools", "LICENSE-nimamahmoudi-worldcup98-dataset")
# the longest a run can wait: three jobs of the default job_timeout, drain_seconds, slack
LONGEST_RUN_SECONDS = 3 * 900 + 30 + 60


def setup_call() -> dict[str, ast.expr]:
    """The keyword arguments of setup.py's setup() call, as expressions."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    return {k.arg: k.value for k in call.keywords if k.arg}


def console_scripts() -> dict[str, str]:
    """setup.py's commands: name -> module."""
    entries = ast.literal_eval(setup_call()["entry_points"])["console_scripts"]
    return {name: target.split(":")[0] for name, target in
            (entry.split("=", 1) for entry in entries)}


def requirement_floors() -> dict[str, str]:
    """setup.py's install_requires: name -> minimum version."""
    entries = ast.literal_eval(setup_call()["install_requires"])
    return dict(entry.split(">=") for entry in entries)


def source_modules() -> set[str]:
    """Every .py file setup.py installs (py_modules and packages), relative to the root."""
    files = set()
    for name in ast.literal_eval(setup_call()["py_modules"]):
        if (ROOT / f"{name}.py").is_file():
            files.add(f"{name}.py")
    for package in ("sshscale", "cloudstack_sim"):
        if (ROOT / package).is_dir():
            files |= {str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")}
    return files


def cronsim_sdist() -> tuple[str, str]:
    """The vendored cronsim: its sdist's file name and version."""
    (sdist,) = VENDOR.glob("cronsim-*.tar.gz")
    return sdist.name, sdist.name[len("cronsim-"):-len(".tar.gz")]


def cronsim_files() -> set[str]:
    """What the packages install of cronsim, relative to the module folder."""
    import tarfile

    name, version = cronsim_sdist()
    with tarfile.open(VENDOR / name) as sdist:
        members = [m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile()]
    return ({m for m in members if m.startswith("cronsim/")}
            | {f"cronsim-{version}.dist-info/METADATA", f"cronsim-{version}.dist-info/LICENSE"})


def clidoc():
    """packaging/clidoc.py as a module."""
    spec = importlib.util.spec_from_file_location("clidoc", ROOT / "packaging" / "clidoc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings}


def parser_options(command: str) -> set[str]:
    """Every option string of the command's parser and its subcommands, as built now."""
    doc = clidoc()
    parser = doc.build_parser(command)
    return set().union(*map(options_of, [parser, *doc.subcommands(parser).values()]))


def make(target: str, out: Path) -> subprocess.CompletedProcess:
    """make TARGET into `out`, the man pages written by this Python (it imports requests)."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    return subprocess.run(["make", "-s", target, f"DIST={out}", f"BUILD_PYTHON={sys.executable}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=BUILD_SECONDS)


# --- the .deb -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """make deb, once for this module."""
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed (not a Debian system): the .deb is not built")
    out = tmp_path_factory.mktemp("dist")
    done = make("deb", out)
    assert done.returncode == 0, done.stdout + done.stderr
    (package,) = out.glob("ssh-scale_*_all.deb")
    assert package.name == f"ssh-scale_{__version__}-1_all.deb"
    return package


@pytest.fixture(scope="module")
def deb_files(deb: Path) -> dict[str, str]:
    """Path -> 'mode owner/group' of every entry; directories end with '/'."""
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    entries = {}
    for line in listing.splitlines():
        mode, owner, *_, path = line.split(None, 5)
        entries[path.split(" -> ")[0].lstrip(".")] = f"{mode} {owner}"
    return entries


@pytest.fixture(scope="module")
def deb_tree(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("deb-tree")
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    return tree


def test_deb_has_the_commands_docs_and_units(deb_files):
    expected = {f"/usr/bin/{name}" for name in console_scripts()} | {
        f"{DOC}/README.md", f"{DOC}/README.ja.md", f"{DOC}/sample.idcfrc", f"{DOC}/copyright",
        f"{DOC}/CHANGELOG.md", *(f"{MAN}/{name}.1.gz" for name in console_scripts()),
        *(f"{COMPLETIONS}/{name}" for name in console_scripts()),
        f"{DOC}/logrotate.d-ssh_scale", f"{DOC}/examples/replay.idcfrc",
        f"{DOC}/examples/spike.csv", f"{DOC}/examples/daily.csv", f"{DOC}/examples/sawtooth.csv",
        *(f"{DOC}/examples/wc98/{name}" for name in WC98_FILES),
        *(f"/lib/systemd/system/{unit}" for unit in UNITS), "/etc/ssh-scale/"}
    assert expected <= set(deb_files)
    assert all(deb_files[f"/usr/bin/{name}"].startswith("-rwxr-xr-x") for name in console_scripts())
    assert all(entry.endswith("root/root") for entry in deb_files.values())


def test_deb_has_every_module_and_nothing_else(deb_files):
    packaged = {path[len(LIB) + 1:] for path in deb_files
                if path.startswith(f"{LIB}/") and not path.endswith("/")}
    assert packaged == (source_modules() | cronsim_files()
                        | {f"ssh_scale-{__version__}.dist-info/METADATA"})


def test_deb_commands_know_the_versions(deb_tree):
    """idcf-compute-api reads the version from the distribution's metadata, packaged too, as
    is cronsim's."""
    lib = str(deb_tree / LIB.lstrip("/"))
    found = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions(path=[lib])}
    assert found == {"ssh-scale": __version__, "cronsim": cronsim_sdist()[1]}


def test_vendored_cronsim_is_the_pinned_sdist():
    name, version = cronsim_sdist()
    digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
    assert (VENDOR / "SHA256SUMS").read_text().split() == [digest, name]
    assert re.search(rf"^%global cronsim_version {re.escape(version)}$", spec_text(), re.M)


def test_deb_carries_cronsim_with_its_licence(deb_tree):
    """cronsim's licence is in the module folder and in the copyright file."""
    version = cronsim_sdist()[1]
    licence = (deb_tree / LIB.lstrip("/") / f"cronsim-{version}.dist-info" / "LICENSE").read_text()
    assert "Redistribution and use in source and binary forms" in licence
    copyright_text = (deb_tree / DOC.lstrip("/") / "copyright").read_text()
    assert "Files: usr/share/ssh-scale/cronsim/*" in copyright_text
    assert "License: BSD-3-Clause" in copyright_text


def test_deb_schedules_use_the_packaged_cronsim(deb_tree, tmp_path):
    """A config with [schedule NAME] runs from the package: the packaged cronsim is the one
    imported (ahead of any other), and the window it opens raises the replay's pool."""
    lib = deb_tree / LIB.lstrip("/")
    examples = deb_tree / DOC.lstrip("/") / "examples"
    env = dict(os.environ, PYTHONPATH=str(lib))
    found = subprocess.run([sys.executable, "-c", "import cronsim; print(cronsim.__file__)"],
                           capture_output=True, text=True, env=env, check=True).stdout
    assert Path(found.strip()).is_relative_to(lib)
    scheduled = tmp_path / "scheduled.idcfrc"
    scheduled.write_text((examples / "replay.idcfrc").read_text()
                         + "\n[schedule always]\ncron = * * * * *\nduration = 1h\nmin_size = 3\n")

    def vm_minutes(config: Path) -> int:
        done = subprocess.run(
            [sys.executable, str(deb_tree / "usr/bin/ssh_scale.py"), "-c", str(config),
             "--replay", str(examples / "spike.csv"), "--start", "2026-12-01 00:00", "--json"],
            capture_output=True, text=True, env=env, timeout=BUILD_SECONDS)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["vm_minutes"]

    assert vm_minutes(scheduled) > vm_minutes(examples / "replay.idcfrc")


def test_deb_md5sums_cover_every_file(deb_tree, deb_files):
    """DEBIAN/md5sums lists every file of the package with its checksum (dpkg --verify)."""
    sums = {}
    for line in (deb_tree / "DEBIAN" / "md5sums").read_text().splitlines():
        digest, path = line.split(None, 1)
        sums[path] = digest
    files = {path.lstrip("/") for path in deb_files if not path.endswith("/")}
    assert set(sums) == files
    for path, digest in sums.items():
        assert hashlib.md5((deb_tree / path).read_bytes()).hexdigest() == digest, path


def test_deb_man_pages_are_generated_from_the_parsers(deb_tree):
    """One man page per command, gzipped, naming every option its parser has now (so a new
    option is documented without editing anything), and clean for man --warnings."""
    for command in console_scripts():
        page = deb_tree / MAN.lstrip("/") / f"{command}.1.gz"
        text = gzip.decompress(page.read_bytes()).decode("utf-8")
        assert text.startswith('.\\" Generated by packaging/clidoc.py')
        assert f'.TH "{command.upper()}" "1"' in text and f"ssh-scale {__version__}" in text
        roff_options = {o.replace("-", "\\-") for o in parser_options(command)}
        assert {o for o in roff_options if f"\\fB{o}\\fR" not in text} == set(), command
        if shutil.which("man"):
            done = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z",
                                   str(page)], capture_output=True, text=True,
                                  env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
            assert done.returncode == 0 and not done.stderr, done.stderr


def complete(script: Path, words: str) -> list[str]:
    """What the bash completion script offers for the command line `words` (the cursor at
    its end)."""
    command = words.split(maxsplit=1)[0]
    function = "_ssh_scale_" + re.sub(r"\W", "_", command)
    code = (f'source "$1"; read -ra COMP_WORDS <<< "$2"; [[ $2 == *" " ]] && COMP_WORDS+=("")\n'
            f"COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); {function}; "
            'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", code, "bash", str(script), words], capture_output=True,
                          text=True, check=True, timeout=30)
    return done.stdout.split()


def test_deb_bash_completions_offer_every_option(deb_tree):
    if not shutil.which("bash"):
        pytest.skip("bash is not installed")
    folder = deb_tree / COMPLETIONS.lstrip("/")
    doc = clidoc()
    for command in console_scripts():
        parser = doc.build_parser(command)
        assert set(complete(folder / command, f"{command} -")) == options_of(parser)
        for name, sub in doc.subcommands(parser).items():
            assert set(complete(folder / command, f"{command} {name} -")) == options_of(sub)
    ssh_scale = folder / "ssh_scale.py"
    assert complete(ssh_scale, "ssh_scale.py --dry") == ["--dry-run"]
    assert complete(ssh_scale, "ssh_scale.py --policy t") == ["threshold", "target"]
    api = folder / "idcf-compute-api"
    assert complete(api, "idcf-compute-api --config x.idcfrc listZo") == ["listZones",
                                                                          "listZonesMetrics"]
    assert complete(folder / "cloudstack-sim", "cloudstack-sim --port 9 lo") == ["load"]
    assert complete(folder / "cloudstack-sim", "cloudstack-sim load --p") == ["--port"]


def test_clidoc_covers_every_command():
    assert set(clidoc().COMMANDS) == set(console_scripts())


def test_deb_purge_forgets_the_enabled_timers(deb_tree, tmp_path):
    """postrm purge removes the links systemctl enable made for ssh_scale@<pool>.timer (and a
    .wants folder left empty), nothing else; remove keeps them (a reinstall resumes)."""
    wants = tmp_path / "etc/systemd/system/timers.target.wants"
    other = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    other.mkdir(parents=True)
    for pool in ("web", "api"):
        (wants / f"ssh_scale@{pool}.timer").symlink_to("/lib/systemd/system/ssh_scale@.timer")
    (other / "ssh.service").symlink_to("/lib/systemd/system/ssh.service")
    env = dict(os.environ, DPKG_ROOT=str(tmp_path))
    postrm = deb_tree / "DEBIAN" / "postrm"
    subprocess.run(["sh", str(postrm), "remove"], env=env, check=True)
    assert sorted(p.name for p in wants.iterdir()) == ["ssh_scale@api.timer",
                                                       "ssh_scale@web.timer"]
    subprocess.run(["sh", str(postrm), "purge"], env=env, check=True)
    assert not wants.exists()
    assert [p.name for p in other.iterdir()] == ["ssh.service"]


def test_deb_enables_nothing(deb_files, deb_tree):
    assert not [path for path in deb_files
                if path.startswith(("/etc/systemd", "/etc/logrotate.d", "/etc/cron"))
                or ".wants/" in path]
    assert [p for p in deb_files if p.startswith("/etc/") and p != "/etc/"] == ["/etc/ssh-scale/"]
    for script in ("postinst", "prerm", "postrm"):
        code = re.sub(r"^\s*#.*$", "", (deb_tree / "DEBIAN" / script).read_text(), flags=re.M)
        assert not re.search(r"systemctl.*\b(enable|start|restart)\b|deb-systemd-", code), script


def test_deb_control_fields(deb):
    fields = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                            check=True).stdout
    control = dict(re.findall(r"^(\S+): (.*)$", fields, re.MULTILINE))
    assert control["Package"] == "ssh-scale"
    assert control["Version"] == f"{__version__}-1"
    assert control["Architecture"] == "all"
    depends = dict(re.findall(r"([\w.+-]+) \(>= ([\d.]+)\)", control["Depends"]))
    floors = requirement_floors()
    assert depends["python3-paramiko"] == floors["paramiko"]
    assert depends["python3-requests"] == floors["requests"]
    assert depends["python3"] == ast.literal_eval(setup_call()["python_requires"])[2:]
    assert "tzdata" in re.split(r",\s*", control["Depends"])  # zoneinfo's, for schedules


def test_deb_commands_run_the_packaged_modules(deb_tree):
    """Each /usr/bin command is setup.py's entry point on /usr/bin/python3; ssh_scale.py
    replays the packaged example with the packaged config (modules from the package)."""
    for name, module in console_scripts().items():
        text = (deb_tree / f"usr/bin/{name}").read_text()
        assert text.startswith("#!/usr/bin/python3\n")
        assert f'sys.path.insert(0, "{LIB}")' in text and f"from {module} import main" in text
    examples = deb_tree / DOC.lstrip("/") / "examples"
    env = dict(os.environ, PYTHONPATH=str(deb_tree / LIB.lstrip("/")))
    done = subprocess.run(
        [sys.executable, str(deb_tree / "usr/bin/ssh_scale.py"), "-c",
         str(examples / "replay.idcfrc"), "--replay", str(examples / "spike.csv"), "--json"],
        capture_output=True, text=True, env=env, timeout=BUILD_SECONDS, cwd=str(deb_tree))
    assert done.returncode == 0, done.stderr
    assert '"policy": "current"' in done.stdout


def test_deb_sample_config_has_placeholders_only(deb_tree):
    sample = (deb_tree / DOC.lstrip("/") / "sample.idcfrc").read_text()
    assert sample == (ROOT / "sample.idcfrc").read_text()
    assert re.search(r"^api_key = YOUR_API_KEY$", sample, re.MULTILINE)
    assert re.search(r"^secret_key = YOUR_SECRET_KEY$", sample, re.MULTILINE)


# --- the .rpm -----------------------------------------------------------------------------


def spec_text() -> str:
    return (ROOT / "contrib" / "rpm" / "ssh-scale.spec").read_text()


def test_rpm_spec_matches_the_version_and_requirements():
    spec = spec_text()
    assert re.search(rf"^Version: +{re.escape(__version__)}$", spec, re.MULTILINE)
    requires = dict(re.findall(r"^Requires: +(\S+) >= (\S+)$", spec, re.MULTILINE))
    floors = requirement_floors()
    assert requires["python3-paramiko"] == floors["paramiko"]
    assert requires["python3-requests"] == floors["requests"]


def test_rpm_file_list(tmp_path):
    if not shutil.which("rpmbuild"):
        pytest.skip("rpmbuild is not installed (dnf install rpm-build, or apt-get install rpm): "
                    "the rpm is not built")
    done = make("rpm", tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (package,) = tmp_path.glob(f"ssh-scale-{__version__}-1*.noarch.rpm")
    files = set(subprocess.run(["rpm", "-qlp", str(package)], capture_output=True,
                               text=True, check=True).stdout.split())
    requires = subprocess.run(["rpm", "-qpR", str(package)], capture_output=True,
                              text=True, check=True).stdout
    expected = {f"/usr/bin/{name}" for name in console_scripts()} | {
        f"{DOC}/README.md", f"{DOC}/README.ja.md", f"{DOC}/sample.idcfrc", f"{DOC}/CHANGELOG.md",
        f"{DOC}/logrotate.d-ssh_scale",
        f"{DOC}/examples/replay.idcfrc", f"{DOC}/examples/spike.csv",
        *(f"{COMPLETIONS}/{name}" for name in console_scripts()),
        "/usr/share/licenses/ssh-scale/LICENSE.cronsim",
        *(f"/usr/lib/systemd/system/{unit}" for unit in UNITS), "/etc/ssh-scale"}
    assert expected <= files
    assert {f"{LIB}/{path}" for path in source_modules() | cronsim_files()} <= files
    assert {name for name in console_scripts()
            if not [f for f in files if f.startswith(f"{MAN}/{name}.1")]} == set()
    assert not [f for f in files if f.startswith(("/etc/systemd", "/etc/logrotate.d"))]
    assert "python3-paramiko >= " in requires and "python3-requests >= " in requires
    assert "tzdata" in requires.split()
    provides = subprocess.run(["rpm", "-qp", "--provides", str(package)], capture_output=True,
                              text=True, check=True).stdout
    assert f"bundled(python3dist(cronsim)) = {cronsim_sdist()[1]}" in provides
    scripts = subprocess.run(["rpm", "-qp", "--scripts", str(package)], capture_output=True,
                             text=True, check=True).stdout
    assert "ssh_scale@*.timer" in scripts and "disable" in scripts  # erase forgets the timers


def test_make_rpm_names_what_is_missing(tmp_path):
    """Without rpmbuild on PATH, make rpm says what to install."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "make"):
        (bare / tool).symlink_to(shutil.which(tool))
    done = subprocess.run(["make", "-s", "rpm", f"DIST={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, env={"PATH": str(bare)},
                          timeout=BUILD_SECONDS)
    assert done.returncode != 0
    assert "make rpm needs rpmbuild" in done.stdout + done.stderr
    assert "rpm-build" in done.stdout + done.stderr


# --- units and cron lines ---------------------------------------------------------------------


def unit_values(path: Path, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", path.read_text(), re.MULTILINE)


@pytest.mark.parametrize("unit", ["ssh_scale@.service", "ssh_scale.service"])
def test_service_runs_an_absolute_command_with_a_finite_timeout(unit):
    path = ROOT / "contrib" / unit
    (command,) = unit_values(path, "ExecStart")
    assert command.startswith("/") and command.split()[0].endswith("/ssh_scale.py")
    (timeout,) = unit_values(path, "TimeoutStartSec")
    minutes = re.fullmatch(r"(\d+)min", timeout)
    assert minutes, f"TimeoutStartSec={timeout}: expected a bound in minutes"
    assert int(minutes.group(1)) * 60 >= LONGEST_RUN_SECONDS


def test_template_service_reads_the_pool_config():
    (command,) = unit_values(ROOT / "contrib" / "ssh_scale@.service", "ExecStart")
    assert command == "/usr/bin/ssh_scale.py -c /etc/ssh-scale/%i.idcfrc"


@pytest.mark.parametrize("unit", ["ssh_scale@.service", "ssh_scale.service"])
def test_units_pass_systemd_analyze_verify(unit, tmp_path):
    """systemd-analyze verify on an instance (ExecStart pointed at an existing program when
    the command is not installed here: verify insists that it exists)."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    names = []
    for suffix in ("service", "timer"):
        source = ROOT / "contrib" / unit.replace(".service", f".{suffix}")
        name = source.name.replace("@.", "@web.")
        text = source.read_text()
        (command,) = unit_values(source, "ExecStart") or [""]
        if command and not os.access(command.split()[0], os.X_OK):
            text = text.replace(command.split()[0], "/bin/true")
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    # --man=no: Documentation=man:ssh_scale.py(1) exists once the package is installed
    done = subprocess.run([analyze, "verify", "--man=no", *names], capture_output=True, text=True,
                          timeout=BUILD_SECONDS, env=dict(os.environ, SYSTEMD_LOG_COLOR="0"))
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), \
        done.stdout + done.stderr


# The sandbox both service units share (ssh_scale@.service's home is the README's scaler
# home, ssh_scale.service's a home in /home): a run's SSH, HTTPS and DNS need these families.
SANDBOX = {
    "ProtectSystem": "strict", "PrivateTmp": "yes", "PrivateDevices": "yes",
    "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallArchitectures": "native",
}
HOME_LINES = {"ssh_scale@.service": {"ProtectHome": ["yes"],
                                     "ReadWritePaths": ["/var/lib/ssh-scale"]},
              "ssh_scale.service": {"ProtectHome": ["read-only"],
                                    "ReadWritePaths": ["/home/scaler"]}}
MOST_EXPOSED = 5.0


def service_settings(unit: str) -> dict[str, list[str]]:
    """[Service] key -> its values, in order (comments skipped)."""
    text = (ROOT / "contrib" / unit).read_text()
    section = text.split("[Service]", 1)[1]
    settings: dict[str, list[str]] = {}
    for key, value in re.findall(r"^(\w+)=(.*)$", section, re.MULTILINE):
        settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("unit", ["ssh_scale@.service", "ssh_scale.service"])
def test_service_is_sandboxed_with_a_writable_home(unit):
    """Everything read-only but the user's home (lock, journal, known_hosts): the same
    sandbox in both units; the template's home is the one the README's adduser creates."""
    settings = service_settings(unit)
    assert {key: settings.get(key, [None])[0] for key in SANDBOX} == SANDBOX
    assert {key: settings.get(key) for key in HOME_LINES[unit]} == HOME_LINES[unit]
    own = ("ExecStart", "Environment", "StandardOutput", "StandardError", *HOME_LINES[unit])
    template = {k: v for k, v in service_settings("ssh_scale@.service").items() if k not in own}
    assert {k: v for k, v in settings.items() if k not in own} == template
    readme = (ROOT / "README.md").read_text()
    assert "sudo adduser --system --group --home /var/lib/ssh-scale scaler" in readme


@pytest.mark.parametrize("unit", ["ssh_scale@.service", "ssh_scale.service"])
def test_service_exposure_is_low(unit, tmp_path):
    """systemd-analyze security --offline (systemd >= 252) rates the unit below 5.0 (it was
    8.7 EXPOSED before the sandbox)."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    name = unit.replace("@.", "@web.")
    (tmp_path / name).write_text((ROOT / "contrib" / unit).read_text())
    done = subprocess.run([analyze, "security", "--offline=true", "--no-pager", name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=BUILD_SECONDS,
                          env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_COLORS="0"))
    if "--offline" in done.stderr and done.returncode != 0:
        pytest.skip("systemd-analyze security --offline needs systemd >= 252")
    score = re.search(rf"Overall exposure level for {re.escape(name)}: ([\d.]+)", done.stdout)
    assert score, done.stdout[-2000:] + done.stderr
    assert float(score.group(1)) < MOST_EXPOSED


# --- make help, the changelog -----------------------------------------------------------


def test_make_help_lists_every_target():
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    phony = re.search(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    done = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=30)
    listed = [line.split()[1] for line in done.stdout.splitlines()]
    assert sorted(listed) == sorted(phony)


def test_changelog_has_the_released_versions_and_the_next():
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == "Unreleased" or headings[0] == __version__
    assert {"1.0.0", "1.1.0"} <= set(headings)
    assert __version__ in headings or headings[0] == "Unreleased"


CRON_LINE = re.compile(r"^\s*(?:#\s*)?(\*(?: \*){4}) (\S+)", re.MULTILINE)


@pytest.mark.parametrize("path", ["README.md", "contrib/ssh_scale.timer",
                                  "contrib/ssh_scale@.timer"])
def test_every_cron_line_uses_an_absolute_path(path):
    commands = [m.group(2) for m in CRON_LINE.finditer((ROOT / path).read_text())]
    assert commands, f"no cron line in {path}"
    assert all(c.startswith("/") for c in commands), commands
