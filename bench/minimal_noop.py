"""The least a no-op run must do, as a reference for the real command's cost: start Python,
import paramiko and requests, load the private key, run `cat /proc/loadavg` over one SSH
connection, make one signed GET listLoadBalancerRuleInstances, and print the load.

    minimal_noop.py CONFIG

CONFIG is the same INI file the real command reads ([account], [monitoring], [scalling]).
Host keys are checked against ~/.ssh/known_hosts. Nothing runs in parallel.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import os
import sys
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import paramiko
import requests

TIMEOUT = 10.0


def sign(params: dict[str, str], secret: str) -> str:
    """CloudStack's HMAC-SHA1: sorted name=urlencoded(value) pairs, lowercased, base64.
    (quote() leaves "~" alone where Java escapes it; no value signed here contains one.)"""
    pairs = sorted((k, quote(v, safe="*-_.")) for k, v in params.items())
    text = "&".join(f"{k}={v}" for k, v in pairs).lower()
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def read_load(mon: configparser.SectionProxy) -> str:
    """The first line of `cat /proc/loadavg` on the monitored host."""
    key = paramiko.PKey.from_path(mon["private_key_path"])
    client = paramiko.SSHClient()
    client.load_host_keys(os.path.expanduser("~/.ssh/known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(mon["host"], port=int(mon.get("port", "22")), username=mon["user"],
                       pkey=key, timeout=TIMEOUT, allow_agent=False, look_for_keys=False)
        _stdin, stdout, _stderr = client.exec_command("cat /proc/loadavg", timeout=TIMEOUT)
        return stdout.read().decode().strip()
    finally:
        client.close()


def list_members(account: configparser.SectionProxy, lb_id: str) -> dict:
    """One signed GET listLoadBalancerRuleInstances; the decoded JSON answer."""
    expires = (datetime.now(timezone.utc) + timedelta(minutes=10)).strftime(
        "%Y-%m-%dT%H:%M:%S+0000")
    params = {"command": "listLoadBalancerRuleInstances", "id": lb_id, "lbvmips": "true",
              "response": "json", "apiKey": account["api_key"], "signatureVersion": "3",
              "expires": expires}
    params["signature"] = sign(params, account["secret_key"])
    response = requests.get(account["host"], params=params, timeout=TIMEOUT)
    response.raise_for_status()
    return dict(response.json())


def main() -> int:
    """Read the config, measure, list, print the load."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(sys.argv[1])
    load = read_load(parser["monitoring"])
    answer = list_members(parser["account"], parser["scalling"]["load_balancer"])
    members = answer["listloadbalancerruleinstancesresponse"].get("count", 0)
    print(f"load {load.split()[0]}, {members} member(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
