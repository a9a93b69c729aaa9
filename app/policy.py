"""What a server that others can reach may offer: training jobs and multi-GB hub models.

A server is exposed when it listens beyond loopback or serves a share link; a Hugging Face Space
(SPACE_ID set) counts as exposed too. There, any visitor could start hour-long training jobs or
make the server download and hold gpt2-xl, so both are off unless the owner opts in with
WORKBENCH_ALLOW_TRAINING=1 / WORKBENCH_ALLOW_LARGE_MODELS=1. A local server offers everything.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

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


def _opted_in(name: str, env) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def large_models_allowed(exposed: bool = False, environ: dict | None = None) -> bool:
    """May visitors load gpt2-large and gpt2-xl? Yes on a local server; on an exposed one or a
    Space only when its owner sets WORKBENCH_ALLOW_LARGE_MODELS=1."""
    env = os.environ if environ is None else environ
    return _opted_in(ALLOW_LARGE_MODELS_ENV, env) or not (exposed or env.get("SPACE_ID"))


@dataclass(frozen=True)
class TrainingPolicy:
    allowed: bool
    reason: str  # why not (empty when allowed)


def training_policy(exposed: bool = False, environ: dict | None = None) -> TrainingPolicy:
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
    if exposed:
        return TrainingPolicy(False, (
            "Training is turned off because this server is reachable from other machines "
            f"(a share link or a non-local host). Start it with {ALLOW_TRAINING_ENV}=1 to allow "
            "anyone who can open the page to start training jobs."))
    return TrainingPolicy(True, "")
