"""``birthdayd migrate``: apply ``sql/NNNN_*.sql`` in order, once each."""

from __future__ import annotations

import importlib.resources
import logging
import urllib.parse

import asyncpg

logger = logging.getLogger(__name__)

# Any constant will do; it only has to be the same for every replica.
_LOCK_KEY = 0x62697274_68646179  # "birthday"

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration shipped in the package, in order."""
    folder = importlib.resources.files("birthdayd").joinpath("sql")
    files = sorted(
        (entry.name, entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return [(name.removesuffix(".sql"), text) for name, text in files]


async def create_database(url: str) -> bool:
    """Create the database named in ``url`` if it is missing; True if created."""
    parts = urllib.parse.urlsplit(url)
    name = urllib.parse.unquote(parts.path.lstrip("/")) or "postgres"
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # another replica won the race
        logger.info("created database %s", name, extra={"event": "database_created"})
        return True
    finally:
        await conn.close()


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply what is missing, under an advisory lock; returns the versions applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(_BOOKKEEPING)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
            logger.info("applied migration %s", version,
                        extra={"event": "migration_applied", "version": version})
    return applied
