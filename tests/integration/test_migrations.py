from __future__ import annotations

import re

import asyncpg

from birthdayd import migrations, states


async def test_migrating_twice_is_a_no_op(database_url: str) -> None:
    """The template was migrated already: running every migration again applies nothing."""
    conn = await asyncpg.connect(database_url)
    try:
        before = await conn.fetch("SELECT version, applied_at FROM schema_migrations")
        assert await migrations.migrate(conn) == []
        assert await migrations.migrate(conn) == []
        after = await conn.fetch("SELECT version, applied_at FROM schema_migrations")
    finally:
        await conn.close()
    assert [tuple(r) for r in before] == [tuple(r) for r in after]
    assert {r["version"] for r in after} == {v for v, _ in migrations.migration_files()}


async def test_migrate_an_empty_database_twice(pool: asyncpg.Pool) -> None:
    """From nothing, the first run applies every file and the second none."""
    async with pool.acquire() as conn:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        applied = await migrations.migrate(conn)
        assert applied == [v for v, _ in migrations.migration_files()]
        assert await migrations.migrate(conn) == []
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "messages", "schema_migrations"} <= tables


async def test_the_same_greeting_cannot_be_planned_twice(pool: asyncpg.Pool) -> None:
    """UNIQUE (user_id, occasion, occasion_date) is enforced by PostgreSQL itself."""
    constraint = await pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'messages_once'")
    assert constraint == "UNIQUE (user_id, occasion, occasion_date)"


async def test_the_status_enum_and_the_schema_check_name_the_same_states(
    pool: asyncpg.Pool,
) -> None:
    """Python spells the states once (states.Status); the CHECK constraint is the
    database's own copy. They must agree, state for state."""
    definition = await pool.fetchval(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "WHERE c.conrelid = 'messages'::regclass AND c.contype = 'c' "
        "AND pg_get_constraintdef(c.oid) LIKE '%status%'")
    in_schema = set(re.findall(r"'(\w+)'::text", definition))
    assert in_schema == {s.value for s in states.Status}
