"""Which names a browser may reach this server by, and which pages may talk to it.

A server on 127.0.0.1 is still reachable from any web page the local user opens: by DNS
rebinding (evil.example resolves to 127.0.0.1, so the page's requests carry Host: evil.example)
or by a plain cross-site form post or WebSocket (the browser sends Origin: https://evil.example).
So both apps answer only requests whose Host is an allowed name, and refuse state-changing
requests and socket connections from a page on another site.

    hosts = allowed_hosts(bind="0.0.0.0", share=False)   # loopback names + the setting
    host_allowed("localhost:7860", hosts)                # True
    origin_allowed("https://evil.example", hosts)        # False
    app = HostGuard(app, hosts)                          # ASGI middleware (both apps)

The allowed names are localhost, 127.0.0.1 and ::1, the name the server was told to listen on
(unless a wildcard), the Space's own name on Hugging Face (SPACE_HOST), *.gradio.live with
--share, and whatever WORKBENCH_ALLOWED_HOSTS (or --allowed-hosts) adds: comma-separated names,
"*.example.org" for a domain and its subdomains, or "*" for any name (not advised).
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from typing import Callable, Iterable
from urllib.parse import urlsplit

ALLOWED_HOSTS_ENV = "WORKBENCH_ALLOWED_HOSTS"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")
SHARE_DOMAIN = "*.gradio.live"
# Methods that only read: a cross-site GET can load the page, not change anything.
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def split_names(value: str | None) -> list[str]:
    """'a.example, *.b.example' -> ['a.example', '*.b.example'] (lower case, no blanks)."""
    return [n.strip().lower().strip("[]") for n in (value or "").split(",") if n.strip()]


def allowed_hosts(bind: str | None = None, share: bool = False, extra: str | None = None,
                  environ: dict | None = None) -> tuple[str, ...]:
    """The names this server answers to (see the module docstring). extra: the --allowed-hosts
    flag, added to WORKBENCH_ALLOWED_HOSTS."""
    env = os.environ if environ is None else environ
    names = list(LOOPBACK_NAMES)
    bind = (bind or "").strip().strip("[]").lower()
    if bind not in WILDCARD_BINDS:
        names.append(bind)
    if env.get("SPACE_HOST"):  # the Space's page, for the Origin check
        names.append(env["SPACE_HOST"].strip().lower())
    if share:
        names.append(SHARE_DOMAIN)
    names += split_names(env.get(ALLOWED_HOSTS_ENV)) + split_names(extra)
    return tuple(dict.fromkeys(names))


def host_name(host: str | None) -> str:
    """The name part of a Host header or netloc: 'LocalHost:7860' -> 'localhost',
    '[::1]:80' -> '::1'."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def name_allowed(name: str, hosts: Iterable[str]) -> bool:
    name = name.rstrip(".")
    for pattern in hosts:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and (name == pattern[2:] or name.endswith(pattern[1:])):
            return True
    return False


def host_allowed(host: str | None, hosts: Iterable[str]) -> bool:
    """Is a Host header one of the allowed names (any port)?"""
    name = host_name(host)
    return bool(name) and name_allowed(name, hosts)


def origin_allowed(origin: str | None, hosts: Iterable[str]) -> bool:
    """Is a page from this Origin one of ours? No Origin (a script, curl, gradio_client) is
    allowed: only browsers send one, and they always do on cross-site requests."""
    if origin is None:
        return True
    try:
        name = urlsplit(origin).hostname
    except ValueError:
        return False
    return bool(name) and name_allowed(name, hosts)


def refusal(host: str | None, hosts: Iterable[str]) -> str:
    return (f"This server does not answer to the name {host_name(host)!r}. If that is its real "
            f"name, add it to {ALLOWED_HOSTS_ENV} (comma-separated), or start the Gradio app "
            f"with --allowed-hosts; it answers to: {', '.join(hosts)}")


class BodyTooLarge(Exception):
    """A request body without a Content-Length grew past the limit while it was read."""


class HostGuard:
    """ASGI middleware: 400 for a request whose Host is not an allowed name, 403 for a
    state-changing request (POST, PUT, ...) or a WebSocket from a page on another site (its
    Origin, or Sec-Fetch-Site: cross-site), 413 for a body over body_limit(path) bytes (a
    body sent without its length is cut off where it passes the limit). Lifespan events pass
    through."""

    def __init__(self, app, hosts: Iterable[str],
                 body_limit: Callable[[str], int] | None = None,
                 check_host: bool | None = None) -> None:
        self.app = app
        self.hosts = tuple(hosts)
        self.body_limit = body_limit
        # On a Space the Host is not checked: the Space is public anyway (rebinding guards
        # servers on loopback), and the platform's own requests may name it otherwise.
        self.check_host = not os.environ.get("SPACE_ID") if check_host is None else check_host

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        host = headers.get("host")
        if self.check_host and not host_allowed(host, self.hosts):
            await self._refuse(scope, send, 400, refusal(host, self.hosts))
            return
        changes = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        cross_site = (not origin_allowed(headers.get("origin"), self.hosts)
                      or headers.get("sec-fetch-site") == "cross-site")
        if changes and cross_site:
            await self._refuse(scope, send, 403, "Requests from pages on other sites are refused.")
            return
        if scope["type"] == "http" and self.body_limit is not None:
            limit = self.body_limit(scope.get("path", ""))
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                await self._refuse(scope, send, 413, f"The request is {int(length):,} bytes; "
                                   f"this server takes at most {limit:,} here.")
                return
            receive = _counted(receive, limit)
        token = _current.set(((scope.get("client") or (None,))[0], headers))
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)

    @staticmethod
    async def _refuse(scope, send, status: int, message: str) -> None:
        if scope["type"] == "websocket":  # close before accepting: the handshake fails
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# The request HostGuard is passing on, for the code it calls (app.policy.RequestExposure): a
# context variable, so each request (and the threads its handlers run in) sees its own.
_current: ContextVar[tuple[str | None, dict] | None] = ContextVar("workbench_request",
                                                                 default=None)


def current_request() -> tuple[str | None, dict] | None:
    """(client address, lower-case headers) of the HTTP request being served through HostGuard,
    or None outside one (for app.policy.RequestExposure)."""
    return _current.get()


def _counted(receive, limit: int):
    """receive() that raises BodyTooLarge once more than `limit` body bytes arrived."""
    seen = 0

    async def counted():
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body") or b"")
            if seen > limit:
                raise BodyTooLarge(f"request body over {limit:,} bytes")
        return message
    return counted
