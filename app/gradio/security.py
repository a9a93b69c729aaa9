"""What the Gradio server does before any handler runs: the Host allowlist and the refusal of
cross-site posts (app.hosts.HostGuard), body and upload size limits, the clean-up of old
uploads, optional sign-in (app.auth), and who the current request comes from (for
app.policy.RequestExposure). docs/security.md explains each setting.

    demo.launch(..., **launch_options(host, share, extra_hosts))
"""

from __future__ import annotations

from starlette.middleware import Middleware

from app.auth import check_login, password_required
from app import hosts
from app.hosts import HostGuard, allowed_hosts
from app.limits import MAX_BODY_BYTES
from app.training_data import MAX_UPLOAD_BYTES

# Uploads live in Gradio's cache folder until a run copies them (app.training_data): delete
# what is older than an hour, looking every ten minutes.
UPLOAD_CLEANUP = (600, 3600)


def body_limit(path: str) -> int:
    """Bytes a request body may have: an upload up to MAX_UPLOAD_BYTES (plus the form's own
    few bytes), anything else (a chat turn, its history) MAX_BODY_BYTES."""
    return MAX_UPLOAD_BYTES + 65536 if path.rstrip("/").endswith("/upload") else MAX_BODY_BYTES


def current_request():
    """(client address, lower-case headers) of the request a handler is serving, or None at
    start-up. Gradio keeps the request of the running event in a context variable for every
    handler call and every step of a streaming one; other routes on the same server (the
    OpenAI-compatible API at /v1) are read from app.hosts.HostGuard's."""
    from gradio.context import LocalContext
    request = LocalContext.request.get(None)
    if request is None:  # not a Gradio event: a route of its own (the API at /v1), or start-up
        return hosts.current_request()
    try:
        client = request.client.host if request.client else None
        headers = {k.lower(): v for k, v in request.headers.items()}
    except AttributeError:  # a gr.Request made without a real request (tests, the API docs)
        return None
    return client, headers


def launch_options(host: str | None, share: bool = False, extra_hosts: str | None = None) -> dict:
    """Keyword arguments for Blocks.launch(): the middleware, the upload limit and sign-in."""
    names = allowed_hosts(host, share, extra_hosts)
    options = dict(app_kwargs={"middleware": [Middleware(HostGuard, hosts=names,
                                                         body_limit=body_limit)]},
                   max_file_size=MAX_UPLOAD_BYTES)
    if password_required():
        options.update(auth=check_login,
                       auth_message="This workbench needs a password (ask its owner).")
    return options
