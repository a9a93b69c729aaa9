"""Optional sign-in for both apps, set by the environment (a Space's secrets are environment
variables):

    WORKBENCH_PASSWORD=...   the password (or a long random token used as one); unset = no sign-in
    WORKBENCH_USER=...       the user name to go with it (default: any name is accepted)

Gradio shows its login page (gradio_client passes auth=(user, password)); Chainlit shows its
password form and needs CHAINLIT_AUTH_SECRET to sign its session tokens (app.chainlit.saved
makes one when it is unset and keeps it beside its database, so sign-ins survive a restart).
"""

from __future__ import annotations

import hmac
import os

PASSWORD_ENV = "WORKBENCH_PASSWORD"
USER_ENV = "WORKBENCH_USER"


def password_required(environ: dict | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get(PASSWORD_ENV))


def check_login(username: str, password: str, environ: dict | None = None) -> bool:
    """True when the password (and the user name, when WORKBENCH_USER is set) match; compared in
    constant time. False for everything when no password is set (nothing to sign in to)."""
    env = os.environ if environ is None else environ
    expected = env.get(PASSWORD_ENV) or ""
    if not expected or not isinstance(password, str) or not isinstance(username, str):
        return False
    ok = hmac.compare_digest(password.encode(), expected.encode())
    user = env.get(USER_ENV)
    if user:
        ok = hmac.compare_digest(username.encode(), user.encode()) and ok
    return ok
