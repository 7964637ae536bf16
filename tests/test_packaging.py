"""The packages (make deb, make rpm), the systemd units and the install documentation: what is
in each package, what it depends on, that nothing gets enabled, and that every scheduled
command is an absolute path (cron's PATH has no ~/.local/bin)."""

from __future__ import annotations

import ast
import importlib.metadata
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


def make(target: str, out: Path) -> subprocess.CompletedProcess:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    return subprocess.run(["make", "-s", target, f"DIST={out}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=BUILD_SECONDS)


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
    assert packaged == source_modules() | {f"ssh_scale-{__version__}.dist-info/METADATA"}


def test_deb_commands_know_the_version(deb_tree):
    """idcf-compute-api reads the version from the distribution's metadata, packaged too."""
    lib = str(deb_tree / LIB.lstrip("/"))
    found = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions(path=[lib])}
    assert found == {"ssh-scale": __version__}


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
        f"{DOC}/README.md", f"{DOC}/README.ja.md", f"{DOC}/sample.idcfrc",
        f"{DOC}/logrotate.d-ssh_scale",
        f"{DOC}/examples/replay.idcfrc", f"{DOC}/examples/spike.csv",
        *(f"/usr/lib/systemd/system/{unit}" for unit in UNITS), "/etc/ssh-scale"}
    assert expected <= files
    assert {f"{LIB}/{path}" for path in source_modules()} <= files
    assert not [f for f in files if f.startswith(("/etc/systemd", "/etc/logrotate.d"))]
    assert "python3-paramiko >= " in requires and "python3-requests >= " in requires


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
    done = subprocess.run([analyze, "verify", *names], capture_output=True, text=True,
                          timeout=BUILD_SECONDS, env=dict(os.environ, SYSTEMD_LOG_COLOR="0"))
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), \
        done.stdout + done.stderr


CRON_LINE = re.compile(r"^\s*(?:#\s*)?(\*(?: \*){4}) (\S+)", re.MULTILINE)


@pytest.mark.parametrize("path", ["README.md", "contrib/ssh_scale.timer",
                                  "contrib/ssh_scale@.timer"])
def test_every_cron_line_uses_an_absolute_path(path):
    commands = [m.group(2) for m in CRON_LINE.finditer((ROOT / path).read_text())]
    assert commands, f"no cron line in {path}"
    assert all(c.startswith("/") for c in commands), commands
