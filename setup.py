"""Packaging for ssh-scale: a small, dependable autoscaler for CloudStack clouds."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def version() -> str:
    """sshscale.__version__, read without importing the package (its dependencies may be
    missing while it is being built)."""
    text = (HERE / "sshscale" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE).group(1)


setup(
    name="ssh-scale",
    version=version(),
    description="Scale a CloudStack load-balancer pool by the load average read over SSH",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["sshscale", "sshscale.*", "cloudstack_sim",
                                    "cloudstack_sim.*"]),
    py_modules=["ssh_scale", "idcf_api", "cloudstack_commands", "textio", "load_sshd"],
    # paramiko 2.9 brought the rsa-sha2 signatures OpenSSH >= 8.8 wants for RSA keys; the
    # distributions' versions (Debian 12: paramiko 2.12, requests 2.28) are tested in
    # tests/test_keys_compat.py, down to these floors.
    # cronsim: [schedule NAME]'s cron expressions (2.6 is the last release for Python 3.9;
    # pip picks it there). tzdata: the zone database zoneinfo falls back to where the system
    # has none (the system's /usr/share/zoneinfo comes first; any version works).
    install_requires=["requests>=2.20", "paramiko>=2.9", "cronsim>=2.6", "tzdata>=2020.1"],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6", "cs>=3", "ruff", "vermin",
                 "import-linter>=2.1", "prometheus_client"],
        "plot": ["matplotlib>=3.3"],
    },
    entry_points={
        "console_scripts": [
            "ssh_scale.py=sshscale.cli:main",
            "idcf-compute-api=idcf_api:main",
            "cloudstack-sim=cloudstack_sim.cli:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Environment :: Console",
        "Topic :: System :: Systems Administration",
    ],
)
