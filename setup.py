"""Packaging for ssh-scale: a small, dependable autoscaler for CloudStack clouds."""

from setuptools import setup

setup(
    name="ssh-scale",
    version="1.0.0",
    description="Scale a CloudStack load-balancer pool by the load average read over SSH",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    py_modules=["ssh_scale", "idcf_api", "ssh_scale_replay", "load_sshd", "ssh_scale_demo"],
    packages=["cloudstack_sim"],
    install_requires=["requests>=2.20", "paramiko>=3.2"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "cs>=3", "ruff", "vermin"],
        "plot": ["matplotlib>=3.3"],
    },
    scripts=["scripts/ssh_scale.py"],
    entry_points={
        "console_scripts": [
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
