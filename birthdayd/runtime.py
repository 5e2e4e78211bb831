"""Wiring: open shared resources, start the roles, stop them in reverse.

Resources and roles are entered on one :class:`contextlib.AsyncExitStack`, so
whatever started is stopped, in reverse order, however the start ended.
Background tasks are supervised: one that ends while the daemon is not
stopping stops it with exit code 1, so systemd, compose or Kubernetes
restart it (nothing runs headless).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Coroutine, Sequence
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from birthdayd import BirthdaydError, api, backoff, clock, logs, metrics, migrations, retry, store
from birthdayd import broker as broker_mod
from birthdayd import deliveries as deliveries_mod
from birthdayd import emailer as emailer_mod
from birthdayd import scheduler as scheduler_mod
from birthdayd import worker as worker_mod
from birthdayd.config import ROLES, SchedulerConfig, Settings, WorkerConfig

logger = logging.getLogger(__name__)

# The cyclic garbage collector, once the process has started (settle_gc).
# Requests in flight hold containers until their answers are written (64 in
# flight under load); a page of GET /users, when the api still built it from
# rows (before migration 0009), held some 1,500.  At Python's default (a
# young collection every 700 new containers, promoted ones examined again
# every 10 of those) the collector kept re-walking the same in-flight pages
# and took 12-14 % of the api process's samples.  Nearly all of it is freed by
# reference counting; what forms cycles waits for the next collection, every
# 50,000 allocations (peak RSS under make bench-api: 58-61 MiB either way).
GC_THRESHOLDS = (50_000, 20, 20)
EXIT_OK = 0
EXIT_TASK_DIED = 1
STARTING_GRACE_S = 1.0
"""How long PostgreSQL may take to answer at start before the port serves
the starting app (api.create_starting_app) meanwhile."""


class SchemaNotReady(BirthdaydError):
    pass


def make_clock(settings: Settings) -> clock.Clock:
    if settings.fake_now is not None:
        return clock.OffsetClock(settings.fake_now)
    return clock.SystemClock()


class Supervisor:
    """Watches background tasks: one that ends before the daemon stops (an
    exception, or returning) is logged and stops the daemon with exit 1."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.failed: list[str] = []

    def watch(self, task: asyncio.Task[None], name: str) -> None:
        def done(finished: asyncio.Task[None]) -> None:
            if self._stop.is_set():
                return
            error = None if finished.cancelled() else finished.exception()
            logger.critical("background task %s ended unexpectedly; stopping", name,
                            exc_info=error, extra={"event": "task_died", "task": name})
            self.failed.append(name)
            self._stop.set()

        task.add_done_callback(done)

    @property
    def exit_code(self) -> int:
        return EXIT_TASK_DIED if self.failed else EXIT_OK


async def open_pool(settings: Settings, stop: asyncio.Event) -> asyncpg.Pool | None:
    """Connect, waiting for PostgreSQL as long as it takes (or until told to stop)."""
    timeout_s = settings.database_timeout.total_seconds()

    async def connect() -> asyncpg.Pool:
        try:
            return await asyncpg.create_pool(
                settings.database_url,
                min_size=min(2, settings.database_pool_size),
                max_size=settings.database_pool_size,
                # A hung statement fails instead of wedging a drain; a pooled
                # connection is then released, so no acquire waits forever.
                command_timeout=timeout_s,
                timeout=timeout_s,
                # No reset round trip per release: birthdayd keeps no session
                # state (no SET, LISTEN, cursors or session advisory locks; an
                # open transaction is still rolled back by asyncpg).
                reset=_keep_session,
                # Every statement here is a short OLTP one; without statistics
                # an inflated estimate switched JIT compilation on for a
                # sub-millisecond read (90 ms each at 10 M users).
                server_settings={"jit": "off"},
            )
        except asyncpg.InvalidCatalogNameError as e:
            raise SchemaNotReady(f"{e}; run 'birthdayd migrate --create-db' first") from e

    try:
        return await backoff.retry(connect, errors=(TimeoutError, OSError, asyncpg.PostgresError),
                                   what="connecting to PostgreSQL", base_s=0.2, cap_s=10.0,
                                   give_up=stop)
    except backoff.GaveUp:
        return None


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset: nothing to reset (see open_pool)."""


async def check_schema(pool: asyncpg.Pool) -> None:
    expected = {version for version, _ in migrations.migration_files()}
    try:
        rows = await pool.fetch("SELECT version FROM schema_migrations")
    except asyncpg.UndefinedTableError:
        rows = []
    missing = expected - {r["version"] for r in rows}
    if missing:
        raise SchemaNotReady(
            f"database is missing migrations {sorted(missing)}; run 'birthdayd migrate'"
        )


async def run(settings: Settings, roles: Sequence[str]) -> int:
    """Run the given roles until SIGTERM/SIGINT; returns the exit code."""
    roles = tuple(roles) or ROLES
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    the_clock = make_clock(settings)
    supervisor = Supervisor(stop)

    pool = await _open_pool_serving_meanwhile(settings, roles, stop)
    if pool is None:
        return EXIT_OK
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_closed_pool, pool)
        await check_schema(pool)

        async def requeue_lost() -> None:
            count = await store.requeue_queued(pool, the_clock.now())
            logger.warning("handed back %d queued greetings to publish again", count,
                           extra={"event": "requeued", "count": count})

        broker = broker_mod.Broker(settings.rabbitmq_url, settings.queue_name,
                                   on_queue_created=requeue_lost)
        collectors: list[Collector] = [metrics.PoolCollector(pool)]
        breaker = retry.Breaker(settings.breaker_error_threshold_pct,
                                settings.breaker_reset_timeout_ms / 1000)
        if "worker" in roles:
            collectors.append(metrics.BreakerCollector(breaker, loop.time))
        readings = None
        if "scheduler" in roles:
            readings = _scheduler_readings(pool, broker, the_clock)
            collectors.append(readings)
        registry = metrics.registry(roles, collectors)
        runner = await _serve_http(settings, roles, pool, the_clock, broker, registry)
        stack.push_async_callback(runner.cleanup)

        if not await _first(broker.start(), stop):
            return EXIT_OK
        stack.push_async_callback(broker.stop)
        assert broker.supervisor is not None
        supervisor.watch(broker.supervisor, "broker-supervisor")

        if "worker" in roles:
            config = WorkerConfig.from_settings(settings)
            emailer = emailer_mod.Emailer(settings.email_api_url, settings.email_api_timeout_ms,
                                          settings.queue_concurrency)
            await emailer.start()
            stack.push_async_callback(emailer.stop)
            work = worker_mod.Worker(
                deliveries_mod.Deliveries(pool, the_clock, send_hour=settings.send_hour,
                                          call_lease=config.call_lease),
                broker, emailer, breaker, the_clock, config)
            await work.start()
            stack.push_async_callback(work.stop, settings.shutdown_grace_s)
        if "scheduler" in roles:
            sched = scheduler_mod.Scheduler(pool, broker, the_clock,
                                            SchedulerConfig.from_settings(settings))
            await sched.start()
            stack.push_async_callback(sched.stop)
        if readings is not None:
            refresher = asyncio.create_task(readings.run(), name="metrics-readings")
            supervisor.watch(refresher, "metrics-readings")
            stack.push_async_callback(_cancelled, refresher)
        settle_gc()
        await stop.wait()
        logger.info("stopping", extra={"event": "stopping"})
    logger.info("stopped", extra={"event": "stopped", "exit_code": supervisor.exit_code})
    return supervisor.exit_code


def settle_gc() -> None:
    """Collect what start-up left, move everything that remains (modules,
    the app, the pool: kept for the process's life) out of the collector's
    sight for good (gc.freeze), and collect less often (GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _scheduler_readings(pool: asyncpg.Pool, broker: broker_mod.Broker,
                        the_clock: clock.Clock) -> metrics.Readings:
    async def backlog() -> int:
        return await store.due_backlog(pool, the_clock.now())

    async def depth(queue: str) -> int:
        # Only a reading: never re-declares a missing queue (see Broker.queue_depth).
        return await broker.queue_depth(queue, redeclare=False)

    names = broker.names
    return metrics.Readings(backlog, depth, (("main", names.queue), ("dead", names.dead_queue)))


async def _cancelled(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _first(start: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``start`` unless ``stop`` is set first; True if it completed."""
    starting = asyncio.ensure_future(start)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        return False
    starting.result()  # a start that failed fails the run
    return True


async def _serve_http(settings: Settings, roles: Sequence[str], pool: asyncpg.Pool,
                      the_clock: clock.Clock, broker: broker_mod.Broker,
                      registry: CollectorRegistry) -> web.AppRunner:
    async def db_ready() -> bool:
        await pool.fetchval("SELECT 1", timeout=2)
        return True

    async def consuming() -> bool:
        return broker.consuming

    async def publishing() -> bool:
        return broker.can_publish

    every = {"postgresql": db_ready, "rabbitmq": broker.check, "consuming": consuming,
             "publishing": publishing}
    checks = {name: every[name] for name in ready_check_names(roles)}
    deps = api.Deps(pool=pool, clock=the_clock, send_hour=settings.send_hour,
                    api_token=settings.api_token, ready_checks=checks,
                    serve_api="api" in roles, registry=registry)
    runner = await _listen(settings, api.create_app(deps))
    logger.info("listening on %s:%d (roles: %s)", settings.host, settings.port,
                ",".join(roles), extra={"event": "started", "roles": list(roles)})
    return runner


def ready_check_names(roles: Sequence[str]) -> list[str]:
    """What /ready reports: each role's own work, beside the two servers every
    role needs."""
    return (["postgresql", "rabbitmq"] + (["consuming"] if "worker" in roles else [])
            + (["publishing"] if "scheduler" in roles else []))


async def _open_pool_serving_meanwhile(settings: Settings, roles: Sequence[str],
                                       stop: asyncio.Event) -> asyncpg.Pool | None:
    """open_pool; if PostgreSQL has not answered within STARTING_GRACE_S, the
    port says meanwhile that the process is alive (/health) and not ready
    (/ready): a supervisor's probes see a process that waits, not one that
    hangs.  Given up to the real server once the pool is open.  The grace
    keeps the usual start as it was: when /health first answers, the API
    does too."""
    connecting = asyncio.ensure_future(open_pool(settings, stop))
    done, _ = await asyncio.wait({connecting}, timeout=STARTING_GRACE_S)
    # Not beside other processes on a shared port (HTTP_REUSE_PORT): the
    # kernel would hand it their share of the traffic, to be answered 503.
    if done or settings.reuse_port:
        return await connecting
    try:
        starting = await _serve_starting(settings, roles)
    except BaseException:
        await _cancelled(connecting)
        raise
    try:
        return await connecting
    finally:
        await starting.cleanup()


async def _serve_starting(settings: Settings, roles: Sequence[str]) -> web.AppRunner:
    """The port while PostgreSQL is awaited (api.create_starting_app)."""
    app = api.create_starting_app(ready_check_names(roles), metrics.registry(roles))
    runner = await _listen(settings, app, shutdown_timeout=1.0)
    logger.info("listening on %s:%d, waiting for PostgreSQL", settings.host, settings.port,
                extra={"event": "starting"})
    return runner


async def _listen(settings: Settings, app: web.Application, shutdown_timeout: float = 60.0
                  ) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port,
                          reuse_port=settings.reuse_port or None).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _closed_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), 10)
    except TimeoutError:
        pool.terminate()


def main(settings: Settings, roles: Sequence[str]) -> int:
    logs.setup(settings.log_level, settings.log_format)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up (+25-35% measured, see README)
    except ImportError:
        return asyncio.run(run(settings, roles))
    return uvloop.run(run(settings, roles))
