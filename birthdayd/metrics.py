"""Prometheus metrics: each process serves, on /metrics, what its roles write.

:func:`registry` builds one registry per process from the roles it runs: an
api replica serves the HTTP families and no worker gauge; a worker serves its
outcomes, and a scheduler its jobs.  Every label combination a counter can take
in that role exists at 0 from start-up, so an ``increase()`` alert fires on
the first event.  Gauges whose value lives elsewhere are computed at scrape
time: in-process state read as of now (the breaker, the pool), or readings of
PostgreSQL and RabbitMQ that a background task refreshes (:class:`Readings`),
so a scrape never waits on I/O.  The README's metrics table lists them all.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from birthdayd import occasions, retry

logger = logging.getLogger(__name__)

# No ``*_created`` series beside each counter and histogram: twice the series
# for a start time that process_start_time_seconds already gives.
disable_created_metrics()  # type: ignore[no-untyped-call]

OCCASIONS = tuple(occasions.OCCASIONS)
WORKER_OUTCOMES = ("sent", "retried", "failed", "expired", "deferred", "cancelled", "dropped")
JOBS = ("tick", "recovery", "daily", "startup")

# -- written where the event happens (registered per role by registry()) ------

MESSAGES = Counter(
    "birthdayd_messages_total",
    "Greetings by outcome. Worker: sent, retried (a retryable failure, another attempt "
    "planned), failed (permanent, or out of retries), expired, deferred (breaker open, "
    "no attempt spent), cancelled (user deleted before the call), dropped (the row was "
    "no longer this worker's at the call: recovered, or removed by an edit). "
    "Scheduler: expired.",
    ["occasion", "outcome"], registry=None,
)
SEND_SECONDS = Histogram(
    "birthdayd_send_seconds",
    "Provider call latency.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=None,
)
LATENESS_SECONDS = Histogram(
    "birthdayd_lateness_seconds",
    "How long after its send instant a greeting was accepted by the provider.",
    buckets=(0.1, 0.5, 1, 2, 5, 15, 60, 300, 3600, 86400, 604800), registry=None,
)
POSSIBLE_DUPLICATES = Counter(
    "birthdayd_possible_duplicates_total",
    "Retries after the provider may already have accepted: an answer after the timeout "
    "(timeout, worker) or a lease that ran out in a claimed call (lease_expired, "
    "scheduler). The two duplicate windows of docs/ARCHITECTURE.md.",
    ["reason"], registry=None,
)
TICK_CLAIMED = Counter("birthdayd_tick_claimed_total", "Rows claimed and published by ticks.",
                       registry=None)
RECOVERED = Counter("birthdayd_recovered_total", "Rows taken back after their lease ran out.",
                    ["state"], registry=None)
HEALED = Counter("birthdayd_healed_total", "Next greetings created by the daily job.",
                 registry=None)
REDELIVERIES_DROPPED = Counter(
    "birthdayd_redeliveries_dropped_total",
    "Deliveries whose row was not queued (already handled): acked and dropped.",
    registry=None,
)
JOB_RUNS = Counter("birthdayd_job_runs_total",
                   "Scheduler job runs by job (tick, recovery, daily, startup) and result "
                   "(ok, error).", ["job", "result"], registry=None)
JOB_SECONDS = Histogram("birthdayd_job_duration_seconds",
                        "How long each scheduler job run took, whatever its result.", ["job"],
                        buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600),
                        registry=None)
JOB_LAST_SUCCESS = Gauge("birthdayd_job_last_success_timestamp_seconds",
                         "Unix time the job last ran without error (no series before that).",
                         ["job"], registry=None)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def job_done(job: str, started_s: float, ok: bool) -> None:
    """Count a scheduler job run that began at ``started_s`` (time.monotonic())."""
    JOB_SECONDS.labels(job).observe(time.monotonic() - started_s)
    JOB_RUNS.labels(job, "ok" if ok else "error").inc()
    if ok:
        JOB_LAST_SUCCESS.labels(job).set(time.time())


HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Http(Collector):
    """HTTP requests: a count by (route, method, status) and a latency histogram
    by (route, method).  Kept in plain dicts and turned into families at scrape
    time: recording a request is two dict lookups, a bisect and three additions,
    with no lock (one event loop writes and reads them).  Every label is bounded:
    route templates, known methods (others are ``other``), status codes."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        # per (route, method): a count per bucket (the last one past every bound), then the sum
        self._latency: dict[tuple[str, str], list[float]] = {}

    def expect(self, route: str, method: str, status: int) -> None:
        """Create a (route, method, status) series at 0."""
        self._counts.setdefault((route, method, status), 0)
        self._latency.setdefault((route, method), [0.0] * (len(HTTP_BUCKETS) + 2))

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in HTTP_METHODS:
            method = "other"
        key = (route, method, status)
        try:
            self._counts[key] += 1
        except KeyError:
            self._counts[key] = 1
        latency = self._latency.get((route, method))
        if latency is None:
            latency = self._latency[route, method] = [0.0] * (len(HTTP_BUCKETS) + 2)
        latency[bisect.bisect_left(HTTP_BUCKETS, seconds)] += 1
        latency[-1] += seconds

    def describe(self) -> Iterable[Metric]:
        return self._families(with_values=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(with_values=True)

    def _families(self, *, with_values: bool) -> list[Metric]:
        requests = CounterMetricFamily(
            "birthdayd_http_requests",
            "HTTP requests by route template (unmatched: no route), method and status.",
            labels=["route", "method", "status"])
        latency = HistogramMetricFamily(
            "birthdayd_http_request_duration_seconds",
            "HTTP request latency by route template and method, in the server (from the "
            "first middleware until the response is built).", labels=["route", "method"])
        if with_values:
            for (route, method, status), count in self._counts.items():
                requests.add_metric([route, method, str(status)], count)
            bounds = [repr(b) for b in HTTP_BUCKETS] + ["+Inf"]  # as Histogram writes them
            for (route, method), counts in self._latency.items():
                cumulative = list(itertools.accumulate(counts[:-1]))
                latency.add_metric([route, method], list(zip(bounds, cumulative, strict=True)),
                                   counts[-1])
        return [requests, latency]


# -- computed at scrape time ----------------------------------------------------


class Pool(Protocol):
    """What PoolCollector reads of an asyncpg pool."""

    def get_size(self) -> int: ...

    def get_idle_size(self) -> int: ...

    def get_max_size(self) -> int: ...


class PoolCollector(Collector):
    """The PostgreSQL pool as it is now."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        size, idle = self._pool.get_size(), self._pool.get_idle_size()
        return self._families(size, self._pool.get_max_size(), size - idle)

    @staticmethod
    def _families(*values: int) -> list[Metric]:
        names = (("birthdayd_db_pool_size", "PostgreSQL connections open in the pool."),
                 ("birthdayd_db_pool_max_size", "The pool's bound (DATABASE_POOL_SIZE)."),
                 ("birthdayd_db_pool_in_use", "Pool connections lent out right now."))
        families: list[Metric] = []
        for i, (name, doc) in enumerate(names):
            family = GaugeMetricFamily(name, doc)
            if values:
                family.add_metric([], values[i])
            families.append(family)
        return families


class BreakerCollector(Collector):
    """1 while the breaker is open *now*: it drops to 0 when the open period has
    elapsed, even if no call has asked the breaker since."""

    def __init__(self, breaker: retry.Breaker, now_s: Callable[[], float]) -> None:
        self._breaker, self._now_s = breaker, now_s

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        family.add_metric([], float(self._breaker.is_open(self._now_s())))
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("birthdayd_breaker_open",
                                 "1 while the provider circuit breaker is open (no call may go "
                                 "out), as of the scrape.")


REFRESH_S = 5.0
READ_TIMEOUT_S = 4.0


class Readings(Collector):
    """What the scheduler watches in PostgreSQL and RabbitMQ: read every
    ``REFRESH_S`` by :meth:`run` (each read on its own, so a broker outage does
    not stop the backlog's), served from memory at scrape time.  A reading that
    failed has no sample until it succeeds again: an absent value, not a stale one."""

    def __init__(self, backlog: Callable[[], Awaitable[int]],
                 depth: Callable[[str], Awaitable[int]],
                 queues: Iterable[tuple[str, str]]) -> None:
        self._backlog, self._depth = backlog, depth
        self._queues = tuple(queues)
        self.backlog: int | None = None
        self.depths: dict[str, int] = {}

    async def refresh(self) -> None:
        async def read(what: str, reading: Awaitable[int]) -> int | None:
            try:
                return await asyncio.wait_for(reading, READ_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - an absent sample says it
                logger.debug("reading %s for /metrics failed: %r", what, e)
                return None

        backlog, *depths = await asyncio.gather(
            read("the due backlog", self._backlog()),
            *(read(f"queue {queue}", self._depth(queue)) for _, queue in self._queues))
        self.backlog = backlog
        self.depths = {label: d for (label, _), d in zip(self._queues, depths, strict=True)
                       if d is not None}

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_S)

    def describe(self) -> Iterable[Metric]:
        return list(self._families(with_values=False))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(with_values=True))

    def _families(self, *, with_values: bool) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "birthdayd_due_backlog",
            f"Rows due and not yet claimed, read from PostgreSQL every {REFRESH_S:g} s "
            "(no sample while it cannot be read).")
        if with_values and self.backlog is not None:
            backlog.add_metric([], self.backlog)
        yield backlog
        depth = GaugeMetricFamily(
            "birthdayd_queue_depth",
            f"Ids ready in RabbitMQ, read every {REFRESH_S:g} s: the main queue (main) and "
            "the bounded dead-letter queue (dead); no sample while it cannot be read.",
            labels=["queue"])
        if with_values:
            for label, value in self.depths.items():
                depth.add_metric([label], value)
        yield depth


# -- one registry per process ----------------------------------------------------


def registry(roles: Iterable[str], collectors: Iterable[Collector] = ()) -> CollectorRegistry:
    """The families the given roles write (plus the process's own and
    ``collectors``), with every counter's label combinations at 0.  The HTTP
    server adds its own :class:`Http` (every role serves HTTP)."""
    roles = set(roles)
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    reg.register(GC_COLLECTOR)
    chosen: list[Collector] = []  # the HTTP families: api.create_app registers its Http
    if "worker" in roles:
        chosen += [MESSAGES, SEND_SECONDS, LATENESS_SECONDS, POSSIBLE_DUPLICATES,
                   REDELIVERIES_DROPPED]
        for occasion in OCCASIONS:
            for outcome in WORKER_OUTCOMES:
                MESSAGES.labels(occasion, outcome)
        POSSIBLE_DUPLICATES.labels("timeout")
    if "scheduler" in roles:
        chosen += [MESSAGES, POSSIBLE_DUPLICATES, TICK_CLAIMED, RECOVERED, HEALED, JOB_RUNS,
                   JOB_SECONDS]
        for occasion in OCCASIONS:
            MESSAGES.labels(occasion, "expired")
        POSSIBLE_DUPLICATES.labels("lease_expired")
        for state in ("queued", "sending"):
            RECOVERED.labels(state)
        for job in JOBS:
            JOB_SECONDS.labels(job)
            for result in ("ok", "error"):
                JOB_RUNS.labels(job, result)
        chosen.append(JOB_LAST_SUCCESS)
    for collector in (*dict.fromkeys(chosen), *collectors):
        reg.register(collector)
    return reg


