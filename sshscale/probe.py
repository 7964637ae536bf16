"""[health] check = http: one GET of [health] url per checked member, in parallel (at most
max_parallel at once), each within [health] timeout; a 2xx answer passes. Every failure of one
member becomes data (a failed Check), never a crash."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests
import urllib3

from sshscale.model import Check, Settings, Vm

__all__ = ["probe", "probe_one"]


def probe_one(url: str, timeout: float) -> Check:
    """GET the URL: a 2xx status within `timeout` seconds (to connect, and again to the first
    byte of the answer) passes; redirects are not followed and the body is not read.
    Certificates are not verified and proxies are not used: the check asks whether the member
    itself answers, as a load balancer's health check does."""
    try:
        with requests.Session() as session:
            session.trust_env = False  # no HTTP_PROXY detour to a member's private address
            with session.get(url, timeout=timeout, allow_redirects=False, stream=True,
                             verify=False) as answer:
                status = answer.status_code
    except requests.Timeout:
        return Check(False, f"{url}: no answer within {timeout:g} s")
    except requests.ConnectionError as exc:
        refused = "refused" in str(exc).lower()
        return Check(False, f"{url}: {'connection refused' if refused else 'cannot connect'}")
    except requests.RequestException as exc:
        return Check(False, f"{url}: {exc.__class__.__name__}")
    if 200 <= status < 300:
        return Check(True)
    return Check(False, f"{url}: HTTP {status}")


def probe(members: Sequence[Vm], settings: Settings) -> dict[str, Check]:
    """Check every member at its address, in parallel; by VM id."""
    if not members:
        return {}
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    urls = [settings.health_url.format(ip=vm.ip) for vm in members]
    with ThreadPoolExecutor(max_workers=min(settings.max_parallel, len(urls))) as pool:
        checks = pool.map(lambda url: probe_one(url, settings.health_timeout), urls)
        return {vm.id: check for vm, check in zip(members, checks)}
