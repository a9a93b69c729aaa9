"""What the Chainlit server does before any handler runs (install() is called once, when
handlers.py is imported, before `chainlit run` starts serving):

- the Host allowlist and the refusal of cross-site posts and sockets (app.hosts.HostGuard);
- an Origin check on the Socket.IO connection itself: Chainlit creates its socket server with
  cors_allowed_origins=[], which accepts every Origin, so a page on any site could chat, list
  the models and start training; the allowed names are app.hosts' (loopback names, the bind name,
  SPACE_HOST, WORKBENCH_ALLOWED_HOSTS);
- the sign-in and the saved conversations (saved.py: Chainlit's password form when
  WORKBENCH_PASSWORD is set, otherwise header sign-in as the local user or a guest);
- who the current message comes from (for app.policy.RequestExposure).
"""

from __future__ import annotations

import os

import chainlit as cl
from chainlit.config import config as chainlit_config

from app.hosts import HostGuard, allowed_hosts, host_allowed, origin_allowed
from app.limits import MAX_BODY_BYTES

from . import saved


def hosts() -> tuple[str, ...]:
    return allowed_hosts(chainlit_config.run.host)


def socket_origin_allowed(origin: str | None, environ: dict | None = None) -> bool:
    """engineio's cors_allowed_origins callable: the page's Origin and the Host it reached the
    server by must both be allowed names (a rebinding page has a matching but foreign pair)."""
    names = hosts()
    host = (environ or {}).get("HTTP_HOST")
    host_ok = host is None or host_allowed(host, names) or bool(os.environ.get("SPACE_ID"))
    return origin_allowed(origin, names) and host_ok


def current_request():
    """(client address, lower-case headers) of the socket connection the current Chainlit
    session came in on, or None outside a session. engineio's environ always says REMOTE_ADDR
    127.0.0.1, so the address comes from the ASGI scope."""
    try:
        environ = cl.context.session.environ or {}
    except Exception:  # noqa: BLE001 - no Chainlit context: start-up, a background task
        return None
    scope = environ.get("asgi.scope") or {}
    client = (scope.get("client") or (None,))[0]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
               for k, v in scope.get("headers") or []}
    return client, headers


def install() -> None:
    from chainlit.server import app, sio

    app.add_middleware(HostGuard, hosts=hosts(), body_limit=lambda path: MAX_BODY_BYTES)
    sio.eio.cors_allowed_origins = socket_origin_allowed
    saved.install()
