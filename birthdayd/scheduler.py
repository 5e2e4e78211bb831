"""The scheduler role: the tick, the recovery sweep and the daily job.

The scheduler never sends.  It claims due rows with ``FOR UPDATE SKIP
LOCKED``, marks them queued under a lease and publishes their ids; any number
of replicas may run it at once.  Each job is a plain method taking ``now`` so
tests drive it with a manual clock; APScheduler only decides when to call it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Awaitable, Callable

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from birthdayd import broker as broker_mod
from birthdayd import clock as clock_mod
from birthdayd import config, crontab, dispatch, flow, greetings, metrics, store
from birthdayd.config import SchedulerConfig
from birthdayd.states import Status

logger = logging.getLogger(__name__)

# Ticks fire a little late; publish this much beyond the next tick as well.
AHEAD_MARGIN = dt.timedelta(seconds=2)
# Claimed batches whose publishes may be in flight at once (each batch's ids
# are themselves published concurrently, confirms awaited together).
PIPELINE = 3
# How often a tick counts queued rows again (while it waits for the backlog
# to drain, or while it claims).
FLOW_POLL_S = 0.5


class Scheduler:
    def __init__(self, pool: asyncpg.Pool, broker: broker_mod.Broker,
                 clock: clock_mod.Clock, cfg: SchedulerConfig) -> None:
        self.pool = pool
        self.broker = broker
        self.clock = clock
        self.cfg = cfg
        self._tick_trigger = crontab.cron_trigger(cfg.cron_minute)
        self._aps: AsyncIOScheduler | None = None
        self._stopping = False
        self._running: set[asyncio.Task[object]] = set()
        self.flow = flow.Flow(lease_s=dispatch.QUEUED_LEASE.total_seconds())
        self._counted_s = -math.inf  # when queued rows were last counted (monotonic)

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
        published = await self._claim_and_publish(now, horizon)
        if published:
            logger.info("published %d due greetings", published,
                        extra={"event": "tick", "published": published})
        return published

    async def _claim_and_publish(self, now: dt.datetime, horizon: dt.datetime) -> int:
        """Claim due rows in batches while the backlog has room for them
        (backpressure, see flow.py), with up to ``PIPELINE`` batches' publishes
        in flight; a failed or cancelled publish hands its rows straight back."""
        published = 0
        started_s = time.monotonic()
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                room = await self._room()
                if room == 0:
                    if time.monotonic() - started_s > self.cfg.tick_budget_s:
                        logger.warning("the backlog stays at its bound; the next tick "
                                       "goes on", extra={"event": "tick_backpressure"})
                        break
                    await asyncio.sleep(FLOW_POLL_S)
                    continue
                limit = min(self.cfg.batch, room)
                # A long catch-up must not hand out leases that already ran out.
                batch_now = now + dt.timedelta(seconds=time.monotonic() - started_s)
                # Committed before publishing: a worker must find the row queued.
                ids = await store.claim_due(self.pool, horizon, limit,
                                            batch_now + dispatch.QUEUED_LEASE, batch_now)
                if ids:
                    self.flow.claimed(len(ids))
                    task = asyncio.create_task(
                        dispatch.publish_claimed(self.pool, self.broker, ids, batch_now))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    published += len(ids)
                    metrics.TICK_CLAIMED.inc(len(ids))
                    if len(in_flight) >= PIPELINE:
                        done, _ = await asyncio.wait(in_flight,
                                                     return_when=asyncio.FIRST_COMPLETED)
                        for finished in done:
                            finished.result()  # a failed publish ends the tick
                if len(ids) < limit:
                    break
        finally:
            if in_flight:
                results = await asyncio.gather(*in_flight, return_exceptions=True)
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures and not isinstance(failures[0], asyncio.CancelledError):
                    raise failures[0]
        return published

    async def _room(self) -> int:
        """Room left in the backlog.  Queued rows are counted again only when
        this process's own tally finds no room, or ``FLOW_POLL_S`` after the
        last count (other replicas claim too), not before every batch: a count
        walks every queued row."""
        now_s = time.monotonic()
        if self.flow.room() == 0 or now_s - self._counted_s >= FLOW_POLL_S:
            self.flow.observe(now_s, await store.queued_count(self.pool))
            self._counted_s = now_s
        return self.flow.room()

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
        """Take back rows whose lease ran out in queued or sending; a row that
        may have reached the provider gets one more lease first."""
        recovered = graced = 0
        while True:
            rows = await store.recover_stale(self.pool, now, self.cfg.batch,
                                             self.cfg.call_lease)
            for row in rows:
                if not row["taken"]:
                    graced += 1
                    continue
                recovered += 1
                metrics.RECOVERED.labels(row["taken_from"]).inc()
                if row["taken_from"] == Status.SENDING and row["called"]:
                    # Its worker died (or lost PostgreSQL for longer than the
                    # grace) between the provider call and the record: the
                    # provider may have accepted.
                    metrics.POSSIBLE_DUPLICATES.labels("lease_expired").inc()
            if len(rows) < self.cfg.batch:
                break
        if graced:
            logger.warning("%d greetings in a provider call outlived their lease; "
                           "their workers get one more", graced,
                           extra={"event": "lease_grace", "count": graced})
        if recovered:
            logger.warning("recovered %d greetings whose lease ran out", recovered,
                           extra={"event": "recovered", "count": recovered})
        return recovered

    async def daily(self, now: dt.datetime) -> int:
        healed = await greetings.heal(self.pool, now, self.cfg.send_hour)
        if healed is None:
            logger.info("another replica is running the daily job",
                        extra={"event": "heal_skipped"})
            return 0
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
        await self.recover(self.clock.now())
        await self.tick(self.clock.now(), self.ahead())  # after a sweep of any length

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
                self._job(name, func),
                crontab.cron_trigger(expr),
                id=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        # Catch up at once after a downtime rather than at the next cron fire.
        aps.add_job(self._job("startup", self._run_recovery), "date", run_date=wall,
                    id="startup")
        aps.start()
        self._aps = aps
        logger.info("scheduler started", extra={"event": "scheduler_started"})

    async def stop(self) -> None:
        """No new runs; a running job finishes its current batch (a tick stops
        claiming, and what it claimed is published or handed straight back),
        within the grace; then it is cancelled, and still hands rows back."""
        self._stopping = True
        if self._aps is not None:
            self._aps.shutdown(wait=False)
        running = set(self._running)
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=self.cfg.stop_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def _job(self, name: str, func: Callable[[], Awaitable[None]]
             ) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            started_s = time.monotonic()
            try:
                await func()
            except Exception:
                metrics.job_done(name, started_s, ok=False)
                # The next run retries; the rows are still in PostgreSQL.
                logger.exception("%s job failed", name,
                                 extra={"event": "job_failed", "job": name})
            else:
                metrics.job_done(name, started_s, ok=True)

        async def job() -> None:
            if self._stopping:
                return
            # APScheduler cancels a running job when it shuts down; the run
            # lives in a task of its own, so stop() lets it end its batch.
            task: asyncio.Task[object] = asyncio.create_task(run(), name=f"job-{name}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            await asyncio.shield(task)

        return job
