"""Bulk test data for scale work ("Scale: ten million users"): N users, each with
its next greeting per occasion planned exactly as birthdayd plans it.  A tool,
not a test.

    .venv/bin/python tests/performance/generate.py \\
        --database-url postgresql://postgres@127.0.0.1:5432/birthdayd_bench_1m \\
        --users 1000000 [--hot-share 0.1 --hot-zone Asia/Kolkata --hot-date 03-15] \\
        [--due-at-once 1000 --now 2027-01-15T14:00:00Z] [--seed 1] [--analyze]

- Creates the database if it is missing and applies the migrations
  (``birthdayd.migrations``), then loads users with COPY in batches.
- Birthdays: uniform over the days of the year, years 1950-2008, 29 February
  with its real share (1 in 1,461); zones: ~40 common zones weighted by
  population, plus a uniform tail over every zone of the pinned tzdata; ~30%
  of users have an anniversary (married at 18 or later, last year at the latest).
- ``--hot-share`` of the users are born on ``--hot-date`` in ``--hot-zone``: one
  instant (India, 15 March: 03:30Z) owes all their greetings.
- Each user gets a ``scheduled`` row per occasion it has, computed with
  ``calendar_rules.next_greeting(origin, zone, 9, now)`` (cached per origin
  day, zone and year floor: ~600 zones x 366 days), ids from ``store.new_id()``.
- ``--due-at-once K --now T``: K users (spread evenly over the id range) have
  their birthday greeting due at T exactly (their zone is one where T is 09:00
  local, their birthday is T's local date; planned before T), and every other
  greeting is planned after T, so exactly K rows are due at T, and still
  exactly K one tick later (09:00 local is always on a quarter hour).
- Into empty tables, the secondary indexes are dropped during the load and
  built again after it (same definitions, read from the catalog), and foreign
  key triggers are skipped (``session_replication_role = replica``; the data is
  consistent by construction).  Into tables that already hold rows, rows are
  appended with every index in place.
- No ANALYZE unless ``--analyze``: the point is to measure without statistics too.
- The database's comment records what was generated (JSON), so a benchmark can
  tell whether it may reuse the database.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import datetime as dt
import itertools
import json
import queue
import random
import sys
import threading
import time
import urllib.parse
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from birthdayd import calendar_rules, migrations, store, validation

UTC = dt.UTC
SEND_HOUR = 9
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/birthdayd_bench"

# Population-ish weights (percent of the users) for common zones; the rest of
# the users (TAIL_SHARE) are spread uniformly over every zone of tzdata.
COMMON_ZONES: dict[str, float] = {
    "Asia/Kolkata": 14.0, "Asia/Shanghai": 12.0, "America/New_York": 4.5,
    "America/Chicago": 2.5, "America/Denver": 0.8, "America/Los_Angeles": 3.5,
    "America/Sao_Paulo": 3.5, "Asia/Jakarta": 3.5, "Asia/Karachi": 3.0,
    "Africa/Lagos": 3.0, "Asia/Dhaka": 2.5, "Europe/Moscow": 2.2,
    "America/Mexico_City": 2.2, "Asia/Tokyo": 2.2, "Asia/Manila": 1.8,
    "Africa/Cairo": 1.7, "Asia/Ho_Chi_Minh": 1.6, "Europe/Istanbul": 1.4,
    "Asia/Tehran": 1.4, "Europe/Berlin": 1.3, "Asia/Bangkok": 1.1,
    "Europe/London": 1.2, "Europe/Paris": 1.1, "Europe/Rome": 0.9,
    "Africa/Johannesburg": 0.9, "Asia/Seoul": 0.9, "Europe/Madrid": 0.8,
    "America/Bogota": 0.9, "America/Argentina/Buenos_Aires": 0.8,
    "America/Toronto": 0.6, "Europe/Kyiv": 0.6, "Europe/Warsaw": 0.6,
    "Africa/Nairobi": 0.7, "America/Lima": 0.5, "Asia/Riyadh": 0.5,
    "Australia/Sydney": 0.5, "Asia/Kathmandu": 0.4, "Asia/Kabul": 0.4,
    "Asia/Yangon": 0.4, "America/St_Johns": 0.1, "Australia/Adelaide": 0.1,
}
TAIL_SHARE = 0.08
ANNIVERSARY_SHARE = 0.30
FEB29_SHARE = 1 / 1461
BIRTH_YEARS = (1950, 2008)

FIRST_NAMES = ["Aarav", "Ana", "Ben", "Chen", "Chloe", "Diego", "Emma", "Fatima", "Hana",
               "Ivan", "Jia", "Kofi", "Lars", "Layla", "Lucas", "Maria", "Mei", "Mohammed",
               "Nia", "Noah", "Olga", "Omar", "Priya", "Ravi", "Sara", "Sofia", "Tariq",
               "Wei", "Yuki", "Zara"]
LAST_NAMES = ["Ali", "Bauer", "Chen", "Costa", "Dubois", "Garcia", "Gupta", "Hansen",
              "Ivanova", "Kim", "Kowalski", "Li", "Martin", "Mensah", "Muller", "Nakamura",
              "Nguyen", "Okafor", "Patel", "Rossi", "Santos", "Silva", "Singh", "Smith",
              "Tanaka", "Wang", "Yilmaz", "Zhang"]

USER_COLUMNS = ["id", "first_name", "last_name", "email", "birthday", "anniversary",
                "location", "created_at", "updated_at"]
MESSAGE_COLUMNS = ["id", "user_id", "occasion", "occasion_date", "send_at", "status",
                   "due_at", "created_at", "updated_at"]

# Month/day of each day of a common year.
_DAYS = [(m, d) for m in range(1, 13) for d in range(1, calendar.monthrange(2001, m)[1] + 1)]
_LEAP_YEARS = [y for y in range(BIRTH_YEARS[0], BIRTH_YEARS[1] + 1) if calendar.isleap(y)]


def parse_month_day(text: str) -> tuple[int, int]:
    month, day = (int(p) for p in text.split("-"))
    dt.date(2000, month, day)  # validates (2000 is a leap year: 02-29 is allowed)
    return month, day


def parse_instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give an offset, e.g. 2027-01-15T14:00:00Z")
    return value.astimezone(UTC)


@dataclass
class Planner:
    """next_greeting, cached: it depends on the origin only through its month
    and day and, for recent origins, its year (the first greeting is the year
    after the origin's)."""

    now: dt.datetime
    zones: dict[str, zoneinfo.ZoneInfo] = field(default_factory=dict)
    cache: dict[tuple[int, int, str, int], tuple[dt.date, dt.datetime]] = field(
        default_factory=dict)

    def zone(self, name: str) -> zoneinfo.ZoneInfo:
        z = self.zones.get(name)
        if z is None:
            z = self.zones[name] = zoneinfo.ZoneInfo(name)
        return z

    def next(self, origin: dt.date, zone: str) -> tuple[dt.date, dt.datetime]:
        # next_greeting starts at max(local year - 1, origin year + 1); the local
        # year is at least now's UTC year - 1, so older origins all behave alike.
        floor = max(origin.year + 1, self.now.year - 2)
        key = (origin.month, origin.day, zone, floor)
        hit = self.cache.get(key)
        if hit is None:
            g = calendar_rules.next_greeting(origin, self.zone(zone), SEND_HOUR, self.now)
            hit = self.cache[key] = (g.date, g.send_at)
        return hit


@dataclass
class Spec:
    users: int
    offset: int  # users already in the table (emails continue from there)
    seed: int
    now: dt.datetime
    hot_share: float
    hot_zone: str
    hot_date: tuple[int, int]
    due_at_once: int
    due_zones: list[str]
    batch: int


def due_zones_at(instant: dt.datetime) -> list[str]:
    """Zones where ``instant`` is exactly SEND_HOUR:00 local on its local date."""
    found = []
    for name in sorted(validation.zones()):
        zone = zoneinfo.ZoneInfo(name)
        day = calendar_rules.local_today(instant, zone)
        if calendar_rules.send_instant(day, SEND_HOUR, zone) == instant:
            found.append(name)
    return found


def batches(spec: Spec) -> Any:
    """Yield (users, messages) record lists of ``spec.batch`` users each."""
    rng = random.Random(spec.seed)
    planner = Planner(spec.now)
    all_zones = sorted(validation.zones())
    names = list(COMMON_ZONES) + all_zones
    weights = [w / 100 for w in COMMON_ZONES.values()]
    common_total = sum(weights)
    weights = [w * (1 - TAIL_SHARE) / common_total for w in weights]
    weights += [TAIL_SHARE / len(all_zones)] * len(all_zones)
    cum = list(itertools.accumulate(weights))
    due_every = spec.users / spec.due_at_once if spec.due_at_once else 0.0
    due_positions = {int((j + 0.5) * due_every) for j in range(spec.due_at_once)}
    created = spec.now
    year_lo, year_hi = BIRTH_YEARS
    this_year = spec.now.year

    uniform = rng.random  # int(uniform() * n) is a fair draw here, and 3x faster than randrange

    def origin_day(month_day: tuple[int, int] | None, year_lo: int, year_hi: int) -> dt.date:
        if month_day is None:
            month_day = (2, 29) if uniform() < FEB29_SHARE else _DAYS[int(uniform() * 365)]
        if month_day == (2, 29):
            year = rng.choice([y for y in range(year_lo, year_hi + 1) if calendar.isleap(y)]
                              or _LEAP_YEARS)
        else:
            year = year_lo + int(uniform() * (year_hi - year_lo + 1))
        return dt.date(year, *month_day)

    for start in range(0, spec.users, spec.batch):
        count = min(spec.batch, spec.users - start)
        zones = rng.choices(names, cum_weights=cum, k=count)
        users: list[tuple[Any, ...]] = []
        messages: list[tuple[Any, ...]] = []
        for k in range(count):
            i = start + k
            zone = zones[k]
            if i in due_positions:
                zone = spec.due_zones[i % len(spec.due_zones)]
                local = calendar_rules.local_today(spec.now, planner.zone(zone))
                birthday = origin_day((local.month, local.day), year_lo, year_hi)
                greeting = (local, spec.now)
            elif spec.hot_share and uniform() < spec.hot_share:
                zone = spec.hot_zone
                birthday = origin_day(spec.hot_date, year_lo, year_hi)
                greeting = planner.next(birthday, zone)
            else:
                birthday = origin_day(None, year_lo, year_hi)
                greeting = planner.next(birthday, zone)
            anniversary = None
            married_from = max(birthday.year + 18, 1960)
            if uniform() < ANNIVERSARY_SHARE and married_from < this_year:
                anniversary = origin_day(None, married_from, this_year - 1)
            user_id = store.new_id()
            first = FIRST_NAMES[int(uniform() * len(FIRST_NAMES))]
            last = LAST_NAMES[int(uniform() * len(LAST_NAMES))]
            email = f"{first}.{last}{spec.offset + i}@example.com".lower()
            users.append((user_id, first, last, email, birthday, anniversary, zone,
                          created, created))
            messages.append((store.new_id(), user_id, "birthday", greeting[0], greeting[1],
                             "scheduled", greeting[1], created, created))
            if anniversary is not None:
                day, at = planner.next(anniversary, zone)
                messages.append((store.new_id(), user_id, "anniversary", day, at,
                                 "scheduled", at, created, created))
        yield users, messages


def check_planner(now: dt.datetime, seed: int, samples: int = 20000) -> None:
    """The cache gives what next_greeting gives, on random origins and zones."""
    rng = random.Random(seed + 1)
    planner = Planner(now)
    zones = sorted(validation.zones())
    for _ in range(samples):
        month, day = (2, 29) if rng.random() < 0.05 else _DAYS[rng.randrange(365)]
        years = [y for y in range(1950, now.year) if month != 2 or day != 29 or
                 calendar.isleap(y)]
        origin = dt.date(rng.choice(years[-5:] if rng.random() < 0.3 else years), month, day)
        zone = rng.choice(zones)
        g = calendar_rules.next_greeting(origin, zoneinfo.ZoneInfo(zone), SEND_HOUR, now)
        assert planner.next(origin, zone) == (g.date, g.send_at), (origin, zone)


async def secondary_indexes(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """(name, definition) of the indexes on users and messages that back no
    constraint, in creation order."""
    rows = await conn.fetch("""
        SELECT c.relname, pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid IN ('users'::regclass, 'messages'::regclass)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
        ORDER BY i.indexrelid""")
    return [(r["relname"], r["def"]) for r in rows]


def database_name(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/"))


async def generate(args: argparse.Namespace) -> None:
    now: dt.datetime = args.now or dt.datetime.now(UTC).replace(microsecond=0)
    if args.due_at_once and args.now is None:
        sys.exit("--due-at-once needs --now")
    if args.hot_zone not in validation.zones():
        sys.exit(f"--hot-zone {args.hot_zone!r} is not a tzdata zone")
    due_zones: list[str] = []
    if args.due_at_once:
        due_zones = due_zones_at(now)
        if not due_zones:
            sys.exit(f"no zone has {SEND_HOUR}:00 local at {now.isoformat()}: "
                     "pick an instant on a quarter hour")
    check_planner(now, args.seed)

    if await migrations.create_database(args.database_url):
        print(f"created database {database_name(args.database_url)}", flush=True)
    conn = await asyncpg.connect(args.database_url)
    try:
        applied = await migrations.migrate(conn)
        if applied:
            print(f"migrated: {', '.join(applied)}", flush=True)
        existing = await conn.fetchval("SELECT count(*) FROM users")
        empty = existing == 0 and not await conn.fetchval("SELECT EXISTS (SELECT FROM messages)")
        spec = Spec(users=args.users, offset=existing, seed=args.seed, now=now,
                    hot_share=args.hot_share, hot_zone=args.hot_zone,
                    hot_date=args.hot_date, due_at_once=args.due_at_once,
                    due_zones=due_zones, batch=args.batch)
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("SET max_parallel_maintenance_workers = 0")
        dropped: list[tuple[str, str]] = []
        if empty and not args.keep_indexes:
            dropped = await secondary_indexes(conn)
            for name, _ in dropped:
                await conn.execute(f'DROP INDEX "{name}"')
        try:
            n_users, n_messages, load_s = await load(conn, spec)
        finally:
            t0 = time.perf_counter()
            for name, definition in dropped:
                t1 = time.perf_counter()
                await conn.execute(definition)
                print(f"  index {name}: {time.perf_counter() - t1:.1f} s", flush=True)
            index_s = time.perf_counter() - t0
        total_s = load_s + index_s
        rows = n_users + n_messages
        print(f"loaded {n_users:,} users and {n_messages:,} greetings in {load_s:.1f} s "
              f"({rows / load_s:,.0f} rows/s, {n_users / load_s:,.0f} users/s)"
              + (f"; indexes rebuilt in {index_s:.1f} s; overall {rows / total_s:,.0f} rows/s"
                 if dropped else ""), flush=True)
        if args.analyze:
            t0 = time.perf_counter()
            await conn.execute("ANALYZE users, messages")
            print(f"analyzed in {time.perf_counter() - t0:.1f} s", flush=True)
        total = await conn.fetchval("SELECT count(*) FROM users")
        meta = {"users": total, "now": now.isoformat(), "due_at_once": args.due_at_once
                if empty else None, "seed": args.seed, "hot_share": args.hot_share,
                "hot_zone": args.hot_zone, "hot_date": "{:02d}-{:02d}".format(*args.hot_date),
                "generated_at": dt.datetime.now(UTC).isoformat(timespec="seconds")}
        if not empty:
            meta["appended"] = True
        name = database_name(args.database_url).replace('"', '""')
        comment = json.dumps(meta).replace("'", "''")
        await conn.execute(f"COMMENT ON DATABASE \"{name}\" IS 'birthdayd-bench {comment}'")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"database {database_name(args.database_url)}: {total:,} users, {size}", flush=True)
    finally:
        await conn.close()


async def load(conn: asyncpg.Connection, spec: Spec) -> tuple[int, int, float]:
    """COPY the batches, generated in a thread so generation and PostgreSQL's
    work overlap (bounded queue: two batches ahead at most)."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for item in batches(spec):
                ready.put(item)
        except BaseException as e:
            ready.put(e)
            raise
        ready.put(None)

    producer = threading.Thread(target=produce, daemon=True)
    started = time.perf_counter()
    producer.start()
    n_users = n_messages = 0
    last_report = 0
    loop = asyncio.get_running_loop()
    while True:
        item = await loop.run_in_executor(None, ready.get)
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        users, messages = item
        await conn.copy_records_to_table("users", records=users, columns=USER_COLUMNS)
        await conn.copy_records_to_table("messages", records=messages,
                                         columns=MESSAGE_COLUMNS)
        n_users += len(users)
        n_messages += len(messages)
        if n_users - last_report >= 1_000_000 or n_users == spec.users:
            last_report = n_users
            elapsed = time.perf_counter() - started
            print(f"  {n_users:>11,} users {n_messages:>11,} greetings  {elapsed:7.1f} s  "
                  f"{(n_users + n_messages) / elapsed:,.0f} rows/s", flush=True)
    producer.join()
    return n_users, n_messages, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--hot-share", type=float, default=0.1,
                        help="share of users born on --hot-date in --hot-zone (default 0.1)")
    parser.add_argument("--hot-zone", default="Asia/Kolkata")
    parser.add_argument("--hot-date", type=parse_month_day, default=(3, 15), help="MM-DD")
    parser.add_argument("--due-at-once", type=int, default=0,
                        help="this many birthday greetings due exactly at --now")
    parser.add_argument("--now", type=parse_instant, default=None,
                        help="the planning instant (ISO 8601 with offset; default: now)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100_000, help="users per COPY")
    parser.add_argument("--analyze", action="store_true", help="ANALYZE after loading")
    parser.add_argument("--keep-indexes", action="store_true",
                        help="load into empty tables with every index in place")
    args = parser.parse_args()
    if args.users <= 0 or args.due_at_once < 0 or args.due_at_once > args.users:
        parser.error("need 0 <= --due-at-once <= --users and --users > 0")
    if not 0 <= args.hot_share < 1:
        parser.error("--hot-share must be in [0, 1)")
    asyncio.run(generate(args))


if __name__ == "__main__":
    main()
