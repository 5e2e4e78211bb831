"""The scheduler role: the tick, the recovery sweep and the daily job.

The scheduler never sends.  It claims due rows with ``FOR UPDATE SKIP
LOCKED``, marks them queued under a lease and publishes their ids; any number
of replicas may run it at once.  Each job is a plain method taking ``now`` so
tests drive it with a manual clock; APScheduler only decides when to call it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from birthdayd import broker as broker_mod
from birthdayd import clock as clock_mod
from birthdayd import config, dispatch, greetings, metrics, store

logger = logging.getLogger(__name__)

# Ticks fire a little late; publish this much beyond the next tick as well.
AHEAD_MARGIN = dt.timedelta(seconds=2)


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    cron_minute: str = "* * * * *"
    cron_recovery: str = "*/10 * * * *"
    cron_daily: str = "0 0 * * *"
    send_hour: int = 9
    max_lateness: dt.timedelta = dt.timedelta(days=7)
    publish_lease: dt.timedelta = dt.timedelta(seconds=60)
    """How long a claimed row may wait for its publish to be confirmed."""
    batch: int = 1000


class Scheduler:
    def __init__(self, pool: asyncpg.Pool, broker: broker_mod.Broker,
                 clock: clock_mod.Clock, cfg: SchedulerConfig) -> None:
        self.pool = pool
        self.broker = broker
        self.clock = clock
        self.cfg = cfg
        self._tick_trigger = config.cron_trigger(cfg.cron_minute)
        self._aps: AsyncIOScheduler | None = None

    # -- the jobs ---------------------------------------------------------------

    async def tick(self, now: dt.datetime, ahead: dt.timedelta = dt.timedelta(0)) -> int:
        """Expire what is too late, then claim and publish what is due by
        ``now + ahead``; returns how many ids were published."""
        horizon = now + ahead
        try:
            await self.expire(now, horizon)
        except Exception:
            # Expiry is housekeeping; it must never hold up what is due.
            logger.exception("expiring overdue greetings failed",
                             extra={"event": "expire_failed"})
        published = 0
        started_s = time.monotonic()
        while True:
            # A long catch-up must not hand out leases that already ran out.
            batch_now = now + dt.timedelta(seconds=time.monotonic() - started_s)
            # Committed before publishing: a worker must find the row queued.
            ids = await store.claim_due(self.pool, horizon, self.cfg.batch,
                                        batch_now + self.cfg.publish_lease, batch_now)
            if ids:
                await dispatch.publish_claimed(self.pool, self.broker, ids, batch_now)
            published += len(ids)
            metrics.TICK_CLAIMED.inc(len(ids))
            if len(ids) < self.cfg.batch:
                break
        metrics.DUE_BACKLOG.set(await store.due_backlog(self.pool, now))
        if published:
            logger.info("published %d due greetings", published,
                        extra={"event": "tick", "published": published})
        return published

    async def expire(self, now: dt.datetime, horizon: dt.datetime) -> int:
        """Greetings later than MAX_LATENESS become expired (and get next year's)."""
        cutoff = now - self.cfg.max_lateness
        expired = 0
        while True:
            # Committed on its own: planning next year's may fail and be retried
            # by the daily job, but must never undo or block the expiry.
            # (A PUT holds the user's row and may wait on these rows: locking
            # the user in the same transaction as the expiry could deadlock.)
            rows = await store.expire_overdue(self.pool, horizon, cutoff, now, self.cfg.batch)
            for row in rows:
                metrics.MESSAGES.labels(row["occasion"], "expired").inc()
            if rows:
                async with self.pool.acquire() as conn:
                    ended = [(r["user_id"], r["occasion"]) for r in rows]
                    await greetings.plan_next(conn, ended, now, self.cfg.send_hour)
            expired += len(rows)
            if len(rows) < self.cfg.batch:
                break
        if expired:
            logger.warning("expired %d greetings later than %s", expired,
                           config.format_duration(self.cfg.max_lateness),
                           extra={"event": "expired", "count": expired})
        return expired

    async def recover(self, now: dt.datetime) -> int:
        """Take back rows whose lease ran out in queued or sending."""
        recovered = 0
        while True:
            rows = await store.recover_stale(self.pool, now, self.cfg.batch)
            for row in rows:
                metrics.RECOVERED.labels(row["taken_from"]).inc()
                if row["taken_from"] == "sending":
                    # The worker died mid-call: the provider may have accepted.
                    metrics.POSSIBLE_DUPLICATES.labels("lease_expired").inc()
            recovered += len(rows)
            if len(rows) < self.cfg.batch:
                break
        if recovered:
            logger.warning("recovered %d greetings whose lease ran out", recovered,
                           extra={"event": "recovered", "count": recovered})
        return recovered

    async def daily(self, now: dt.datetime) -> int:
        healed = await greetings.heal(self.pool, now, self.cfg.send_hour)
        metrics.HEALED.inc(healed)
        if healed:
            logger.warning("created %d missing next greetings", healed,
                           extra={"event": "healed", "count": healed})
        return healed

    # -- wiring -----------------------------------------------------------------

    def ahead(self) -> dt.timedelta:
        """Until the next tick, so a row due before then is published now."""
        wall = clock_mod.SystemClock().now()
        nxt = self._tick_trigger.get_next_fire_time(None, wall)
        return (nxt - wall if nxt else dt.timedelta(minutes=1)) + AHEAD_MARGIN

    async def _run_tick(self) -> None:
        await self.tick(self.clock.now(), self.ahead())

    async def _run_recovery(self) -> None:
        now = self.clock.now()
        await self.recover(now)
        await self.tick(now, self.ahead())

    async def _run_daily(self) -> None:
        await self.daily(self.clock.now())

    async def start(self) -> None:
        aps = AsyncIOScheduler(timezone=dt.UTC)
        jobs: list[tuple[str, str, Callable[[], Awaitable[None]]]] = [
            ("tick", self.cfg.cron_minute, self._run_tick),
            ("recovery", self.cfg.cron_recovery, self._run_recovery),
            ("daily", self.cfg.cron_daily, self._run_daily),
        ]
        wall = clock_mod.SystemClock().now()
        for name, expr, func in jobs:
            aps.add_job(
                _logged(name, func),
                config.cron_trigger(expr),
                id=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        # Catch up at once after a downtime rather than at the next cron fire.
        aps.add_job(_logged("startup", self._run_recovery), "date", run_date=wall, id="startup")
        aps.start()
        self._aps = aps
        logger.info("scheduler started", extra={"event": "scheduler_started"})

    async def stop(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=False)


def _logged(name: str, func: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        try:
            await func()
        except Exception:
            # The next run retries; the rows are still in PostgreSQL.
            logger.exception("%s job failed", name, extra={"event": "job_failed", "job": name})

    return job
