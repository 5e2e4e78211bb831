"""Broker faults under real ``birthdayd`` processes, on a private RabbitMQ node.

Each test breaks RabbitMQ under running daemons while greetings are being
delivered: the whole broker restarted (``stop_app``/``start_app``), the main
queue deleted (the broker cancels the consumer), the worker's channel or
connection closed by the broker.  Each ends with every greeting accepted
exactly once by a provider that ignores ``Idempotency-Key`` (so any re-send is a
visible duplicate), nothing left in ``queued``/``sending``, and every daemon
running (or restarted after a non-zero exit, as a supervisor would) with
``/ready`` 200.  While a worker does not consume, its ``/ready`` must not say
200 for more than :data:`READY_GRACE_S`.

The node is private (:mod:`tests.e2e.rabbit_node`) because these faults would
break everyone else's tests on the shared one.  With ``-s`` each test prints
one ``FIGURES`` line (greetings, provider duplicates, each daemon's
``birthdayd_possible_duplicates_total``, max lateness, time to recover).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import asyncpg
import pytest

from birthdayd import greetings
from tests.e2e.conftest import UTC, Cluster, Proc, Timeline, eventually, statuses, stuck_rows
from tests.e2e.rabbit_node import RabbitNode, rabbit_node_fixture  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

DAY = dt.date(2027, 1, 15)
NINE_UTC = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
CREATED_AT = dt.datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
# A worker that stopped consuming may take this long to say so on /ready.
READY_GRACE_S = 3.0
# From the end of a fault until every worker consumes again (or was restarted).
RECOVER_TIMEOUT_S = 20.0
# The provider answers well within EMAIL_API_TIMEOUT: a send that times out
# may have been accepted (the documented duplicate window 2, counted as
# possible_duplicates{reason="timeout"}), and these tests look for duplicates
# caused by the broker fault alone.
FAST_ENV = {"QUEUE_MAX_RETRIES": "30", "QUEUE_CONCURRENCY": "10", "EMAIL_API_TIMEOUT": "5000"}
# With 10 sends in flight per worker, 300 greetings take about 6 s to deliver:
# long enough for a fault (a rabbitmqctl call takes ~0.6 s) to land mid-run.
PROVIDER_LATENCY_MS = "400"


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
def queue() -> str:
    return f"fault-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cluster_p(tmp_path: Path, database_url: str, queue: str, timeline: Timeline,
              rabbit_node: RabbitNode) -> Iterator[Cluster]:
    """The e2e harness's Cluster, pointed at the private node."""
    c = Cluster(tmp_path, database_url, queue, timeline)
    c.base_env["RABBITMQ_URL"] = rabbit_node.url
    try:
        yield c
    finally:
        c.kill_all()


class Probe:
    """The test's own AMQP connection to the private node (reconnects after a restart)."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self._conn: aiormq.abc.AbstractConnection | None = None

    async def _channel(self) -> aiormq.abc.AbstractChannel:
        if self._conn is None or self._conn.is_closed:
            self._conn = await aiormq.connect(self.url)
        return await self._conn.channel()

    async def state(self) -> tuple[int, int] | None:
        """(messages ready, consumers) of the main queue; None if it does not
        exist; raises OSError/AMQPError while the broker is down."""
        channel = await self._channel()
        try:
            ok = await channel.queue_declare(self.queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()
        return int(ok.message_count or 0), int(ok.consumer_count or 0)

    async def consumers(self) -> int:
        try:
            state = await self.state()
        except (OSError, aiormq.exceptions.AMQPError):
            return 0
        return 0 if state is None else state[1]

    async def delete_queue(self) -> None:
        channel = await self._channel()
        await channel.queue_delete(self.queue)
        await channel.close()

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed:
            await self._conn.close()


@pytest.fixture
async def probe(rabbit_node: RabbitNode, queue: str) -> AsyncIterator[Probe]:
    p = Probe(rabbit_node.url, queue)
    try:
        yield p
    finally:
        with contextlib.suppress(Exception):
            await p.close()


# -- helpers ---------------------------------------------------------------------


def person(i: int) -> dict[str, object]:
    return {"first_name": f"User{i}", "last_name": "Test", "email": f"user{i}@example.com",
            "birthday": dt.date(1990, 1, 15), "anniversary": None, "location": "UTC"}


async def create_users(pool: asyncpg.Pool, n: int, start: int = 0) -> list[uuid.UUID]:
    return [await greetings.create_user(pool, person(i), CREATED_AT, 9)
            for i in range(start, start + n)]


async def max_lateness_s(pool: asyncpg.Pool, users: list[uuid.UUID] | None = None) -> float:
    late = await pool.fetchval(
        "SELECT extract(epoch FROM max(sent_at - send_at)) FROM messages "
        "WHERE occasion_date = $1 AND status = 'sent' AND ($2::uuid[] IS NULL "
        "OR user_id = ANY($2::uuid[]))", DAY, users)
    return round(float(late or 0), 2)


async def ready(proc: Proc) -> int | str:
    """The process's /ready status, or why there is none."""
    assert proc.popen is not None
    if proc.popen.poll() is not None:
        return f"exited {proc.popen.returncode}"
    try:
        async with aiohttp.ClientSession() as session, session.get(
            proc.url + "/ready", timeout=aiohttp.ClientTimeout(total=3)
        ) as r:
            return r.status
    except (aiohttp.ClientError, TimeoutError) as e:
        return f"no answer ({type(e).__name__})"


async def possible_duplicates(proc: Proc) -> dict[str, float] | str:
    assert proc.popen is not None
    if proc.popen.poll() is not None:
        return f"exited {proc.popen.returncode}"
    try:
        async with aiohttp.ClientSession() as session, session.get(proc.url + "/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError as e:
        return f"no answer ({type(e).__name__})"
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("birthdayd_possible_duplicates_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('reason="', 1)[1].split('"', 1)[0]] = float(value)
    return found


@dataclasses.dataclass
class Recovery:
    after_s: float
    saw_503: bool
    exits: list[tuple[str, int]]


async def await_recovery(cluster: Cluster, pool: asyncpg.Pool, probe: Probe,
                         workers: list[Proc], others: list[Proc], since: float,
                         worker_roles: tuple[str, ...], fault: str) -> Recovery:
    """Wait until every worker consumes again (one consumer each on the main
    queue) and every process answers /ready 200.  A worker that exits is
    restarted as a supervisor would (its exit code is recorded; it must be
    non-zero).  Fails if a worker says 200 on /ready while not consuming for
    more than READY_GRACE_S, or if nothing recovers within RECOVER_TIMEOUT_S.
    ``workers`` is updated in place with the restarted processes."""
    saw_503 = False
    exits: list[tuple[str, int]] = []
    lies: list[str] = []
    answers: list[int | str] = []
    others_answers: list[int | str] = []
    queue_state: Any = None
    streak = 0
    while True:
        for i, w in enumerate(workers):
            assert w.popen is not None
            if w.popen.poll() is not None:
                exits.append((w.name, w.popen.returncode))
                workers[i] = await cluster.start(*worker_roles, **FAST_ENV)
        # /ready first: a worker that said 200 and consumes shows up in the
        # queue's consumer count read just after.
        answers = [await ready(w) for w in workers]
        others_answers = [await ready(p) for p in others]
        try:
            queue_state = await probe.state()
        except (OSError, aiormq.exceptions.AMQPError) as e:
            queue_state = f"broker unreachable ({e!r})"
        consumers = queue_state[1] if isinstance(queue_state, tuple) else 0
        saw_503 = saw_503 or 503 in answers
        elapsed = time.monotonic() - since
        says_ready = sum(a == 200 for a in answers)
        # Two samples in a row, so a consumer that came back between the two
        # reads is not taken for a lie.
        streak = streak + 1 if consumers < len(workers) and says_ready > consumers else 0
        if streak >= 2 and elapsed > READY_GRACE_S:
            lies.append(f"{elapsed:.1f}s after the fault: {says_ready} worker(s) answered "
                        f"/ready 200 but the queue had {consumers} consumer(s)")
        if (consumers >= len(workers) and says_ready == len(workers)
                and all(a == 200 for a in others_answers)):
            break
        if elapsed > RECOVER_TIMEOUT_S:
            raise AssertionError(
                f"after {fault}, the workers did not consume again within "
                f"{RECOVER_TIMEOUT_S:.0f}s: main queue (messages ready, consumers) = "
                f"{queue_state!r} for {len(workers)} worker(s); worker /ready = {answers}; "
                f"other processes' /ready = {others_answers}; worker exits = {exits}; "
                f"/ready said 200 while not consuming: {lies[:1] or 'no'}; "
                f"greetings by status = {await statuses(pool)}; "
                f"some unsent rows = {await stuck_rows(pool)}\n{cluster.logs()}")
        await asyncio.sleep(0.1)
    assert not lies, (
        f"after {fault}, /ready answered 200 on a worker that was not consuming, for more "
        f"than {READY_GRACE_S}s: {lies[0]} (and {len(lies) - 1} more samples)\n{cluster.logs()}")
    assert all(code != 0 for _, code in exits), (
        f"a worker exited 0 after {fault} (a supervisor would not restart it): {exits}")
    return Recovery(time.monotonic() - since, saw_503, exits)


async def assert_all_sent_once(cluster: Cluster, pool: asyncpg.Pool, n: int, what: str,
                               timeout_s: float = 40) -> dict[str, Any]:
    async def all_sent() -> bool:
        return await statuses(pool) == {"sent": n}

    async def state() -> dict[str, Any]:
        return {"statuses": await statuses(pool), "unsent": await stuck_rows(pool),
                "ready": {p.name: await ready(p) for p in cluster.procs if p is not cluster.fake}}

    await eventually(all_sent, timeout_s, f"all {n} greetings sent {what}", cluster.logs, state)
    stats = await cluster.fake_stats()
    dupes = {e: k for e, k in stats["byEmail"].items() if k > 1}
    if dupes:
        metrics = {f"{p.name}#{i}": await possible_duplicates(p)
                   for i, p in enumerate(cluster.procs) if p is not cluster.fake}
        raise AssertionError(
            f"{len(dupes)} greetings accepted more than once {what}: {dupes}; "
            f"message ids sent twice: {stats['duplicateKeys']}; the daemons' "
            f"birthdayd_possible_duplicates_total: {metrics}\n{cluster.logs()}")
    assert stats["duplicateKeys"] == {}, f"message ids sent twice {what}"
    assert sorted(stats["byEmail"]) == sorted(f"user{i}@example.com" for i in range(n))
    assert stats["accepted"] == n
    early = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE status = 'sent' AND sent_at < send_at")
    assert early == 0, "a greeting was sent before its instant"
    return stats


async def assert_healthy(procs: list[Proc]) -> None:
    answers = {p.name: await ready(p) for p in procs}
    assert all(a == 200 for a in answers.values()), f"not every daemon is ready: {answers}"


async def figures(name: str, pool: asyncpg.Pool, cluster: Cluster, stats: dict[str, Any],
                  n: int, **extra: object) -> None:
    daemons = [p for p in cluster.procs if p is not cluster.fake]
    dup_metrics = {f"{p.name}#{i}": (await possible_duplicates(p)) or 0
                   for i, p in enumerate(daemons)}
    line = (f"FIGURES {name}: greetings={n} provider_accepted={stats['accepted']} "
            f"provider_duplicates={stats['accepted'] - len(stats['byEmail'])} "
            f"provider_errors={stats['errors']} possible_duplicates={dup_metrics} "
            f"max_lateness_s={await max_lateness_s(pool)} "
            + " ".join(f"{k}={v}" for k, v in extra.items()))
    print("\n" + line, flush=True)


async def start_at(cluster: Cluster, timeline: Timeline, lead_s: float,
                   roles: list[tuple[str, ...]]) -> list[Proc]:
    """Start the daemons together, ``lead_s`` before 09:00 on the shared timeline."""
    timeline.jump(NINE_UTC - dt.timedelta(seconds=lead_s) - timeline.now())
    return list(await asyncio.gather(*(cluster.start(*r, **FAST_ENV) for r in roles)))


async def wait_consumers(probe: Probe, cluster: Cluster, n: int) -> None:
    async def consuming() -> bool:
        return await probe.consumers() >= n

    await eventually(consuming, 15, f"{n} consumer(s) on the main queue", cluster.logs)


async def wait_sent(pool: asyncpg.Pool, cluster: Cluster, n: int) -> None:
    async def enough() -> bool:
        return (await statuses(pool)).get("sent", 0) >= n

    await eventually(enough, 30, f"{n} greetings sent", cluster.logs)


# -- 1. RabbitMQ restarted mid-run -------------------------------------------------------


async def test_rabbitmq_restart_mid_run_delivers_each_greeting_once(
    cluster_p: Cluster, pool: asyncpg.Pool, timeline: Timeline, rabbit_node: RabbitNode,
    probe: Probe,
) -> None:
    """300 greetings due at 09:00 across 2 workers and a scheduler, a flaky
    provider that ignores Idempotency-Key; RabbitMQ is stopped (stop_app) after
    5% are sent and started again once every daemon reports 503: each
    process reconnects by itself and every greeting is accepted exactly once."""
    n = 300
    await create_users(pool, n)
    await cluster_p.start_fake("--ignore-idempotency-key", "--latency-ms", PROVIDER_LATENCY_MS,
                               "--error-rate", "0.1", "--seed", "5")
    w1, w2, sched = await start_at(cluster_p, timeline, 3,
                                   [("worker",), ("worker",), ("scheduler",)])
    workers, procs = [w1, w2], [w1, w2, sched]
    await wait_consumers(probe, cluster_p, 2)
    await wait_sent(pool, cluster_p, n // 20)

    fault_at = time.monotonic()
    await rabbit_node.ctl("stop_app")
    at_fault = await statuses(pool)
    assert at_fault.get("sent", 0) < n, f"the fault came after the run ended: {at_fault}"

    async def all_unready() -> bool:
        return all(a == 503 for a in [await ready(p) for p in procs])

    async def answers() -> dict[str, int | str]:
        return {p.name: await ready(p) for p in procs}

    await eventually(all_unready, 10, "every daemon answering 503 on /ready with RabbitMQ down",
                     cluster_p.logs, answers)
    await rabbit_node.ctl("start_app")
    back_at = time.monotonic()
    recovery = await await_recovery(cluster_p, pool, probe, workers, [sched], back_at,
                                    ("worker",), "stop_app/start_app")
    stats = await assert_all_sent_once(cluster_p, pool, n, "after a RabbitMQ restart")
    all_sent_s = time.monotonic() - back_at
    await assert_healthy([*workers, sched])
    await figures("rabbitmq_restart", pool, cluster_p, stats, n,
                  sent_at_fault=at_fault.get("sent", 0),
                  outage_s=round(back_at - fault_at, 1),
                  recover_s=round(recovery.after_s, 1), all_sent_after_s=round(all_sent_s, 1),
                  worker_exits=recovery.exits)


# -- 2. The main queue deleted under a running daemon ---------------------------------


async def test_main_queue_deleted_worker_consumes_again_and_sends_the_rest_once(
    cluster_p: Cluster, pool: asyncpg.Pool, timeline: Timeline, probe: Probe,
) -> None:
    """A worker and a scheduler deliver 100 greetings at 09:00; then the main
    queue is deleted (the broker cancels the worker's consumer with
    basic.cancel).  The worker must notice, declare the topology again and
    consume (or exit non-zero and be restarted); /ready must not claim 200
    while it does not consume; the 200 greetings due at 09:00:20 are each
    accepted exactly once."""
    first, later = 100, 200
    await create_users(pool, first)
    later_users = await create_users(pool, later, start=first)
    later_at = NINE_UTC + dt.timedelta(seconds=20)
    # 09:00 local is every user's instant; the fault test needs a second batch
    # due after the fault, so their rows are moved (the calendar is not under test).
    moved = await pool.execute(
        "UPDATE messages SET send_at = $2, due_at = $2 WHERE occasion_date = $1 "
        "AND status = 'scheduled' AND user_id = ANY($3::uuid[])", DAY, later_at, later_users)
    assert moved == f"UPDATE {later}"
    await cluster_p.start_fake("--ignore-idempotency-key", "--error-rate", "0.1",
                               "--seed", "9")
    worker, sched = await start_at(cluster_p, timeline, 3, [("worker",), ("scheduler",)])
    workers = [worker]
    await wait_consumers(probe, cluster_p, 1)

    async def first_sent() -> bool:
        return (await statuses(pool)).get("sent", 0) == first

    await eventually(first_sent, 30, f"the first {first} greetings sent", cluster_p.logs)
    assert await ready(worker) == 200

    fault_at = time.monotonic()
    await probe.delete_queue()
    deleted_at = timeline.now()
    assert deleted_at < later_at - dt.timedelta(seconds=5), "too slow to test the second batch"
    recovery = await await_recovery(cluster_p, pool, probe, workers, [sched], fault_at,
                                    ("worker",), "deleting the main queue")
    stats = await assert_all_sent_once(cluster_p, pool, first + later,
                                       "after the main queue was deleted")
    await assert_healthy([*workers, sched])
    await figures("queue_deleted", pool, cluster_p, stats, first + later,
                  recover_s=round(recovery.after_s, 1),
                  saw_503_while_not_consuming=recovery.saw_503,
                  worker_exits=recovery.exits,
                  max_lateness_after_fault_s=await max_lateness_s(pool, later_users))


# -- 3. The worker's channel or connection closed by the broker --------------------------

CLOSE_CONSUMER_CHANNELS = (
    # Makes each channel that has a consumer process a basic.ack for a delivery
    # tag it never sent: the broker closes that channel (406 PRECONDITION_FAILED),
    # the connection stays up.  Returns one ok per channel.
    "[rabbit_channel:do(P, {'basic.ack', 999999999, false}) || P <- rabbit_channel:list(), "
    "proplists:get_value(consumer_count, rabbit_channel:info(P, [consumer_count])) > 0]."
)


async def consumer_connections(node: RabbitNode) -> set[str]:
    """The connections (Erlang pids) that have a consumer."""
    out = await node.ctl("list_channels", "connection", "consumer_count", "--silent")
    return {line.split("\t")[0] for line in out.splitlines()
            if line.strip() and int(line.split("\t")[1]) > 0}


async def close_connections(node: RabbitNode, conns: set[str]) -> int:
    """What an operator does: ``rabbitmqctl close_connection`` (320 CONNECTION_FORCED)."""
    await asyncio.gather(*(node.ctl("close_connection", c, "bdtest: forced close")
                           for c in conns))
    return len(conns)


@pytest.mark.parametrize("what", ["channel", "connection"])
async def test_broker_closes_the_worker_channel_mid_run_each_greeting_once(
    cluster_p: Cluster, pool: asyncpg.Pool, timeline: Timeline, rabbit_node: RabbitNode,
    probe: Probe, what: str,
) -> None:
    """Two all-roles daemons deliver 600 greetings; after 5% are sent the
    broker closes each consuming channel (406, connection kept) or each
    consuming connection (320 CONNECTION_FORCED, ``rabbitmqctl
    close_connection``).  Each worker must consume again (or exit non-zero and
    be restarted), not claim /ready 200 meanwhile, and every greeting must be
    accepted exactly once.  600, not 300: the fault is one or two rabbitmqctl
    runs, each an Erlang VM that boots in ~0.6 s idle but took over 6 s (the
    whole 300-greeting run) on a machine with both cores busy."""
    n = 600
    await create_users(pool, n)
    await cluster_p.start_fake("--ignore-idempotency-key", "--latency-ms", PROVIDER_LATENCY_MS,
                               "--error-rate", "0.1", "--seed", "13")
    workers = await start_at(cluster_p, timeline, 3, [(), ()])
    await wait_consumers(probe, cluster_p, 2)
    conns = await consumer_connections(rabbit_node) if what == "connection" else set()
    await wait_sent(pool, cluster_p, n // 20)

    fault_at = time.monotonic()
    if what == "channel":
        closed = (await rabbit_node.eval(CLOSE_CONSUMER_CHANNELS)).count("ok")
    else:
        closed = await close_connections(rabbit_node, conns)
    at_fault = await statuses(pool)
    assert closed == 2, f"expected to close 2 consuming {what}s, closed {closed}"
    assert at_fault.get("sent", 0) < n, f"the fault came after the run ended: {at_fault}"
    recovery = await await_recovery(cluster_p, pool, probe, workers, [], fault_at, (),
                                    f"the broker closed each consuming {what}")
    stats = await assert_all_sent_once(cluster_p, pool, n,
                                       f"after the broker closed the worker {what}s")
    all_sent_s = time.monotonic() - fault_at
    await assert_healthy(workers)
    await figures(f"{what}_closed", pool, cluster_p, stats, n,
                  sent_at_fault=at_fault.get("sent", 0),
                  recover_s=round(recovery.after_s, 1), all_sent_after_s=round(all_sent_s, 1),
                  saw_503_while_not_consuming=recovery.saw_503, worker_exits=recovery.exits)
