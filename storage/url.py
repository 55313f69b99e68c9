"""Database URL resolution and masking: which database to open, and how to name it without its password.

Precedence: an explicit URL (command line) > `TAKEOVER_DB_URL` > `StorageConfig.db_url`. The clip root
follows the same rule with `TAKEOVER_CLIP_ROOT`. A password may come from the environment, PGPASSWORD
or ~/.pgpass, never from the config (a committed file), and it is masked in every message.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from storage.errors import ConfigError

DB_URL_ENV = "TAKEOVER_DB_URL"
CLIP_ROOT_ENV = "TAKEOVER_CLIP_ROOT"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
# psycopg (3) is the installed PostgreSQL driver; spelled out so that every SQLAlchemy version picks it.
POSTGRES_DRIVER = "psycopg"
URL_EXAMPLES = "sqlite:///runs/takeover.db or postgresql+psycopg://user@host:5432/takeover"


def parse_db_url(text: str, source: str = "database URL") -> URL:
    """Parse and normalise a URL: `postgres://` and `postgresql://` get the psycopg driver."""
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://") :]
    try:
        url = make_url(text)
    except ArgumentError:
        scheme = text.split(":", 1)[0] if ":" in text else "(none)"
        raise ConfigError(
            f"{source} is not a database URL (scheme {scheme!r}, value hidden); expected {URL_EXAMPLES}"
        ) from None
    if url.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ConfigError(
            f"{source}: backend {url.get_backend_name()!r} is not supported; use {URL_EXAMPLES}"
        )
    if url.get_backend_name() == "postgresql" and url.drivername != f"postgresql+{POSTGRES_DRIVER}":
        url = url.set(drivername=f"postgresql+{POSTGRES_DRIVER}")
    return url


def resolve_db_url(configured: str, explicit: str | None = None) -> URL:
    """The URL to open: `explicit` if given, else $TAKEOVER_DB_URL, else `configured` (password-free)."""
    if explicit:
        return parse_db_url(explicit, "--db-url")
    from_env = os.environ.get(DB_URL_ENV)
    if from_env:
        return parse_db_url(from_env, DB_URL_ENV)
    url = parse_db_url(configured, "storage.db_url")
    if url.password is not None:
        raise ConfigError(
            "storage.db_url (conf/storage.yaml or an override) holds a password, which must never sit in a "
            f"committed file; remove it and set {DB_URL_ENV}, PGPASSWORD or ~/.pgpass instead"
        )
    return url


def resolve_clip_root(configured: str, explicit: str | None = None) -> str:
    """The clip root: `explicit`, else $TAKEOVER_CLIP_ROOT, else `configured`."""
    return explicit or os.environ.get(CLIP_ROOT_ENV) or configured


def mask_url(url: URL | str) -> str:
    """The URL as text with its password replaced by ***."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except ArgumentError:
            return "(unparseable URL hidden)"
    return url.render_as_string(hide_password=True)


def redact(text: str, url: URL) -> str:
    """`text` with the URL's password removed, for driver messages that might echo a DSN."""
    if url.password:
        text = text.replace(str(url.password), "***")
    return text


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL (None for in-memory databases)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)
