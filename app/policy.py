"""What a server that others can reach may offer: training jobs and multi-GB hub models.

A server is exposed when it listens beyond loopback or serves a share link; a Hugging Face Space
(SPACE_ID set) counts as exposed too. A server the front ends start also judges each request
(RequestExposure): one that came through a proxy or tunnel, or from another machine, is treated
as exposed even when the server listens on 127.0.0.1. There, any visitor could start hour-long training jobs or
make the server download and hold gpt2-xl, so both are off unless the owner opts in with
WORKBENCH_ALLOW_TRAINING=1 / WORKBENCH_ALLOW_LARGE_MODELS=1. A local server offers everything.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Callable, Mapping

ALLOW_TRAINING_ENV = "WORKBENCH_ALLOW_TRAINING"
ALLOW_LARGE_MODELS_ENV = "WORKBENCH_ALLOW_LARGE_MODELS"
# Hub models an exposed server offers by default: gpt2-large / gpt2-xl are 3 and 6 GB downloads
# and as much memory.
PUBLIC_HUB_MODELS = ("gpt2", "gpt2-medium")


def is_exposed(host: str | None, share: bool = False) -> bool:
    """True when the server can be reached from other machines (a share link or a host that is
    not a loopback address)."""
    if share:
        return True
    host = (host or "127.0.0.1").strip().strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name other than localhost: assume it is reachable


# Headers a proxy or tunnel adds (nginx, Caddy, ngrok, cloudflared, Spaces): a request that carries
# one came from somewhere else, whatever the socket's address says.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip",
                      "x-forwarded-proto", "cf-connecting-ip", "true-client-ip", "via")


def _is_loopback(address: str | None) -> bool:
    address = (address or "").strip().strip("[]").lower()
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def request_is_local(client: str | None, headers: Mapping[str, str]) -> bool:
    """Did a request come from a browser on this machine? Only when the connection comes from
    a loopback address, names the server by a loopback name (Host), and carries no proxy's
    forwarding headers: a reverse proxy or tunnel to 127.0.0.1 makes every visitor's
    connection look local, but not their Host or the headers the proxy adds. Anything in doubt
    counts as not local. headers: lower-case names."""
    from .hosts import LOOPBACK_NAMES, host_name
    if not _is_loopback(client):
        return False
    if any(headers.get(h) for h in FORWARDING_HEADERS):
        return False
    return host_name(headers.get("host")) in LOOPBACK_NAMES


class RequestExposure:
    """`exposed` for a server that judges each request: true when the whole server is exposed
    (a share link, a Space, a public bind address) or when the request being served now does not
    come from this machine (request_is_local). current() returns (client address, lower-case
    headers) of the request being served, or None outside a request (building the page at
    start-up), where the server's own setting decides: every action a visitor takes is judged
    again with its request."""

    def __init__(self, server_exposed: bool,
                 current: Callable[[], tuple[str | None, Mapping[str, str]] | None]) -> None:
        self.server_exposed = server_exposed
        self.current = current

    def __call__(self) -> bool:
        if self.server_exposed:
            return True
        request = self.current()
        return request is not None and not request_is_local(*request)


Exposure = bool | Callable[[], bool]


def exposed_now(exposed: Exposure) -> bool:
    """A fixed answer (True/False) or a RequestExposure, asked for the request being served."""
    return bool(exposed()) if callable(exposed) else bool(exposed)


def _opted_in(name: str, env) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def large_models_allowed(exposed: Exposure = False, environ: dict | None = None) -> bool:
    """May visitors load gpt2-large and gpt2-xl? Yes on a local server; on an exposed one or a
    Space only when its owner sets WORKBENCH_ALLOW_LARGE_MODELS=1."""
    env = os.environ if environ is None else environ
    return _opted_in(ALLOW_LARGE_MODELS_ENV, env) or not (env.get("SPACE_ID") or exposed_now(exposed))


@dataclass(frozen=True)
class TrainingPolicy:
    allowed: bool
    reason: str  # why not (empty when allowed)


def training_policy(exposed: Exposure = False, environ: dict | None = None) -> TrainingPolicy:
    """Training starts processes that use the machine for minutes or hours, so a server anyone
    can reach must not offer it unless its owner says so (WORKBENCH_ALLOW_TRAINING=1)."""
    env = os.environ if environ is None else environ
    if _opted_in(ALLOW_TRAINING_ENV, env):
        return TrainingPolicy(True, "")
    if env.get("SPACE_ID"):
        return TrainingPolicy(False, (
            "Training is turned off on this Hugging Face Space, because any visitor could start "
            f"jobs. The Space's owner can turn it on by setting {ALLOW_TRAINING_ENV}=1 in the "
            "Space's settings (variables)."))
    if exposed_now(exposed):
        return TrainingPolicy(False, (
            "Training is turned off for visitors from other machines (this server has a share "
            "link or a non-local address, or this request came through a proxy or tunnel). "
            f"Start it with {ALLOW_TRAINING_ENV}=1 to allow anyone who can open the page to "
            "start training jobs."))
    return TrainingPolicy(True, "")
