"""Saved conversations in the Chainlit app: Chainlit's SQLAlchemy data layer on a local SQLite
file, and the sign-in that a data layer needs (Chainlit keeps threads per user).

Where the data lives: WORKBENCH_CHAINLIT_DB names the SQLite file; unset, it is
`.workbench/chainlit.db` in the folder `chainlit run` starts in (Chainlit's app root, the
repository for the documented command; git ignores it). `off` turns saving off: no data layer,
no thread list, and no sign-in unless WORKBENCH_PASSWORD asks for one (the app as it was).

Who the user is (install() registers one of Chainlit's auth callbacks):
- WORKBENCH_PASSWORD set: Chainlit's password form (app.auth.check_login); the name typed is the
  user, so each name has its own conversations.
- no password: header auth, which Chainlit's login page calls by itself, so nobody sees a form.
  A browser on this machine (app.policy.request_is_local: loopback address and Host, no proxy
  headers) is the local user, LOCAL_USER; anyone else (a server on 0.0.0.0, a tunnel) is a guest
  with a random name, kept in their sign-in cookie: each browser sees only its own conversations.

Chainlit signs its sign-in cookies with CHAINLIT_AUTH_SECRET. Unset, a random one is made once
and kept beside the database (`chainlit-auth-secret`, mode 0600), so a restart keeps everyone
signed in and their thread lists.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import tempfile
from pathlib import Path

import chainlit as cl
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from app.auth import check_login, password_required
from app.hosts import current_request
from app.policy import request_is_local

DB_ENV = "WORKBENCH_CHAINLIT_DB"
SECRET_ENV = "CHAINLIT_AUTH_SECRET"
SECRET_FILE = "chainlit-auth-secret"
LOCAL_USER = "local"
OFF = ("off", "none", "0", "false", "no")

# Chainlit does not create its tables. This is the schema of Chainlit's documentation for the
# SQLAlchemy data layer (2.12: with the steps columns added up to 2.9.4, `command`,
# `defaultOpen` and `modes`, and `autoCollapse`, which Step.to_dict also writes), in SQLite's
# types: UUIDs and JSON are TEXT, and arrays too (tags are not stored, see update_thread).
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    "id" TEXT PRIMARY KEY,
    "identifier" TEXT NOT NULL UNIQUE,
    "metadata" TEXT NOT NULL,
    "createdAt" TEXT
);
CREATE TABLE IF NOT EXISTS threads (
    "id" TEXT PRIMARY KEY,
    "createdAt" TEXT,
    "name" TEXT,
    "userId" TEXT,
    "userIdentifier" TEXT,
    "tags" TEXT,
    "metadata" TEXT,
    FOREIGN KEY ("userId") REFERENCES users("id") ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS steps (
    "id" TEXT PRIMARY KEY,
    "name" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "threadId" TEXT NOT NULL,
    "parentId" TEXT,
    "streaming" BOOLEAN NOT NULL,
    "waitForAnswer" BOOLEAN,
    "isError" BOOLEAN,
    "metadata" TEXT,
    "tags" TEXT,
    "input" TEXT,
    "output" TEXT,
    "createdAt" TEXT,
    "command" TEXT,
    "start" TEXT,
    "end" TEXT,
    "generation" TEXT,
    "showInput" TEXT,
    "language" TEXT,
    "indent" INT,
    "defaultOpen" BOOLEAN,
    "autoCollapse" BOOLEAN,
    "modes" TEXT,
    FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS elements (
    "id" TEXT PRIMARY KEY,
    "threadId" TEXT,
    "type" TEXT,
    "url" TEXT,
    "chainlitKey" TEXT,
    "name" TEXT NOT NULL,
    "display" TEXT,
    "objectKey" TEXT,
    "size" TEXT,
    "page" INT,
    "language" TEXT,
    "forId" TEXT,
    "mime" TEXT,
    "props" TEXT,
    FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS feedbacks (
    "id" TEXT PRIMARY KEY,
    "forId" TEXT NOT NULL,
    "threadId" TEXT,
    "value" INT NOT NULL,
    "comment" TEXT,
    FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
);
"""


def database_path(environ: dict | None = None, app_root: str | Path | None = None) -> Path | None:
    """The SQLite file conversations are kept in, or None when saving is off."""
    env = os.environ if environ is None else environ
    value = (env.get(DB_ENV) or "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    if app_root is None:
        from chainlit.config import APP_ROOT as app_root
    return Path(app_root) / ".workbench" / "chainlit.db"


def create_schema(path: Path) -> None:
    """The tables, if they are not there yet; the folder and the file private to this user."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
        db.executescript(SCHEMA)
    path.chmod(0o600)


def _json(value):
    """SQLite gives JSON columns back as text; Chainlit's page wants objects."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class SQLiteDataLayer(SQLAlchemyDataLayer):
    """Chainlit's SQLAlchemy data layer, fitted to SQLite (written for PostgreSQL):
    - no connection pool: each query opens the file (cheap), so no connection outlives the
      event loop it was made in;
    - thread updates one at a time (see update_thread);
    - thread tags are not stored (SQLite has no array type: the insert that carries them would
      fail, and with it the thread's name and owner); the mode is in the thread's metadata;
    - JSON columns (thread and step metadata, element props) are decoded when read, so that the
      page gets objects (it reads the resumed thread's chat_profile and chat_settings there).
    Elements (the sources list, exported files, the loss chart) are not saved: that needs a
    storage client, which this layer does not have."""

    def __init__(self, path: Path) -> None:
        url = f"sqlite+aiosqlite:///{path}"
        super().__init__(url)
        self.engine = create_async_engine(url, poolclass=NullPool)
        self.async_session = sessionmaker(bind=self.engine, expire_on_commit=False,
                                          class_=AsyncSession)

    async def create_element(self, element) -> None:
        """Elements are not kept (no storage client, above). Chainlit's create_element would log
        a warning for each one sent: the task list and the loss chart every second of training."""

    async def update_thread(self, thread_id, name=None, user_id=None, metadata=None, tags=None):
        # Chainlit's update_thread reads the metadata, merges, and writes it back; the thread's
        # first update (its name and owner, a task Chainlit starts with the first message) and
        # the app's (its settings) can overlap, and the later write would drop the other's keys.
        async with self._writer():
            await super().update_thread(thread_id, name=name, user_id=user_id, metadata=metadata)

    def _writer(self) -> asyncio.Lock:
        """One lock per event loop (a server has one; tests run several in turn)."""
        loop = asyncio.get_running_loop()
        if getattr(self, "_lock_loop", None) is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def get_all_user_threads(self, user_id=None, thread_id=None):
        threads = await super().get_all_user_threads(user_id=user_id, thread_id=thread_id)
        for thread in threads or []:
            thread["metadata"] = _json(thread.get("metadata")) or {}
            thread["tags"] = None
            for step in thread.get("steps") or []:
                step["metadata"] = _json(step.get("metadata")) or {}
                step["generation"] = _json(step.get("generation"))
        return threads


async def save_thread_settings() -> None:
    """Keep the thread's profile and settings with it, where Chainlit looks for them when the
    thread is resumed (its metadata's chat_profile and chat_settings). Chainlit saves them itself
    only when the page disconnects, which a server stop does not wait for. Nothing before the
    first message (the thread is made then)."""
    from chainlit.data import get_data_layer

    layer, session = get_data_layer(), cl.context.session
    if layer is None or not session.has_first_interaction or not session.thread_id:
        return
    await layer.update_thread(session.thread_id, metadata={
        "chat_profile": session.chat_profile, "chat_settings": session.chat_settings})


# ---------------------------------------------------------------------------------------------
# Sign-in


def auth_secret(folder: Path) -> str:
    """The secret kept in folder/SECRET_FILE, made (0600, never replacing one that another
    server start wrote at the same moment) when there is none."""
    path = folder / SECRET_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{SECRET_FILE}.")  # 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48) + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if it exists: the first writer's secret stays
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    secret = path.read_text().strip()
    if not secret:
        raise SystemExit(f"error: {path} is empty; delete it (a new secret is made) or set "
                         f"{SECRET_ENV}")
    return secret


def user_for_request(request=None) -> cl.User:
    """Header sign-in when there is no password: the local user for a browser on this machine,
    a new guest otherwise. request: (client address, lower-case headers), by default the one
    app.hosts.HostGuard is passing on."""
    request = current_request() if request is None else request
    if request is not None and request_is_local(*request):
        return cl.User(identifier=LOCAL_USER, display_name="You (this computer)",
                       metadata={"provider": "local"})
    return cl.User(identifier=f"guest-{secrets.token_hex(8)}", display_name="Guest",
                   metadata={"provider": "guest"})


async def _header_login(headers):
    return user_for_request()


async def _password_login(username: str, password: str):
    return cl.User(identifier=username or "workbench") if check_login(username, password) else None


def install() -> Path | None:
    """Register the data layer and the sign-in (before the server starts); returns the database
    path, or None when saving is off."""
    path = database_path()
    if path is not None:
        create_schema(path)
        cl.data_layer(lambda: SQLiteDataLayer(path))
    if password_required():
        cl.password_auth_callback(_password_login)
    elif path is not None:
        cl.header_auth_callback(_header_login)
    if password_required() or path is not None:
        if not os.environ.get(SECRET_ENV):
            # Beside the database; with saving off, one per start (sign-ins end with it).
            os.environ[SECRET_ENV] = (auth_secret(path.parent) if path is not None
                                      else secrets.token_urlsafe(48))
    return path
