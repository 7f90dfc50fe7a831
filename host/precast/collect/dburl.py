"""--db values: which backend a value names, and how to show it without its password.

Kept free of psycopg, so that choosing a backend never needs the PostgreSQL extra.
"""

from __future__ import annotations

import urllib.parse


def is_postgres(db: str) -> bool:
    """Whether a --db value names a PostgreSQL database (else it is an SQLite path)."""
    return db.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password (in the authority or as ?password=), for logs and files."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://?"
    netloc = parts.netloc
    if "@" in netloc:
        auth, _, hosts = netloc.rpartition("@")
        user = auth.split(":", 1)[0]
        netloc = f"{user}@{hosts}" if user else hosts
    query = urllib.parse.urlencode(
        [
            (k, v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if k != "password"
        ]
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def display_db(db: str) -> str:
    """A --db value as logs, the ready file and stats show it: never with a password."""
    return redact(db) if is_postgres(db) else db
