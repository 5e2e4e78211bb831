"""The delivery path (docs/ARCHITECTURE.md §1, §4): scheduler tick → RabbitMQ → worker →
e-mail provider, against real PostgreSQL and RabbitMQ and an in-process fake
provider.  Time is a manual clock moved by the test; the only real waits are
the worker's own short waits and polling for it to drain."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import uuid
from typing import Any

import aiormq
import asyncpg
import pytest
from aiohttp import web
from pamqp import commands as pamqp_commands

from birthdayd import clock as clock_mod
from birthdayd import config, greetings, metrics, retry, store
from birthdayd import scheduler as scheduler_mod
from birthdayd.retry import BreakerState
from tests.conftest import RABBITMQ_URL, free_port
from tests.integration.delivery_helpers import (
    FAST,
    UTC,
    MakePipeline,
    Pipeline,
    eventually,
    local,
    provider_ignoring_keys,
)

BIRTHDAY_TEXT = "Hey, Ada Lovelace it's your birthday"
ANNIVERSARY_TEXT = "Hey, Ada Lovelace happy anniversary"
# Ada in New York, born 15 January: 09:00 EST is 14:00Z.
ADA_SEND_AT = dt.datetime(2027, 1, 15, 14, 0, tzinfo=UTC)
BEFORE = dt.datetime(2027, 1, 10, tzinfo=UTC)

_provider = provider_ignoring_keys


def _state(breaker: retry.Breaker) -> BreakerState:
    """Read the state through a call, so mypy does not narrow it across transitions."""
    return breaker.state


async def _ada_due(p: Pipeline, clock: clock_mod.ManualClock, **user: Any) -> uuid.UUID:
    """Create Ada (before her birthday) and return the id of her birthday greeting."""
    clock.set(BEFORE)
    user_id = await p.add_user(**user)
    return (await p.only_row(user_id))["id"]  # type: ignore[no-any-return]


async def _assert_next_year_planned(p: Pipeline, message_id: uuid.UUID) -> None:
    """After a greeting ends, the same occasion's next greeting exists a year later."""
    ended = await p.row(message_id)
    rows = await p.rows(ended["user_id"], ended["occasion"])
    later = [r for r in rows if r["occasion_date"] > ended["occasion_date"]]
    assert len(later) == 1, rows
    nxt = later[0]
    assert nxt["status"] == "scheduled"
    expected = ended["occasion_date"].replace(year=ended["occasion_date"].year + 1)
    assert nxt["occasion_date"] == expected
    assert nxt["attempts"] == 0


# -- what is sent, and when ------------------------------------------------------


async def test_birthday_at_nine_local_is_sent_once_with_the_exact_text_and_key(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider()
    p = await make_pipeline(provider=provider)
    message_id = await _ada_due(p, manual_clock)
    row = await p.row(message_id)
    assert row["send_at"] == ADA_SEND_AT

    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    sent = await p.wait_status(message_id, "sent")
    await p.settle()

    assert len(p.recorder.calls) == 1
    call = p.recorder.calls[0]
    assert call.key == str(message_id)
    assert call.body == {"email": "ada@example.com", "message": BIRTHDAY_TEXT}
    assert provider.accepted == [{"email": "ada@example.com", "message": BIRTHDAY_TEXT,
                                  "key": str(message_id)}]
    assert sent["attempts"] == 1
    assert sent["sent_at"] == ADA_SEND_AT
    assert sent["last_error"] is None
    assert sent["lease_until"] is None
    await _assert_next_year_planned(p, message_id)


async def test_birthday_and_anniversary_on_the_same_day_are_two_greetings_with_their_texts(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider()
    p = await make_pipeline(provider=provider)
    manual_clock.set(BEFORE)
    user_id = await p.add_user(anniversary=dt.date(2015, 1, 15))
    birthday = (await p.only_row(user_id, "birthday"))["id"]
    anniversary = (await p.only_row(user_id, "anniversary"))["id"]

    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 2
    await p.wait_status(birthday, "sent")
    await p.wait_status(anniversary, "sent")
    await p.settle()

    got = sorted((c.key, c.body["message"]) for c in p.recorder.calls)
    assert got == sorted([(str(birthday), BIRTHDAY_TEXT), (str(anniversary), ANNIVERSARY_TEXT)])
    assert provider.by_email == {"ada@example.com": 2}
    await _assert_next_year_planned(p, anniversary)


async def test_a_tick_one_second_before_nine_publishes_nothing(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)
    early = ADA_SEND_AT - dt.timedelta(seconds=1)  # 08:59:59 in New York
    manual_clock.set(early)
    assert await p.scheduler.tick(early) == 0
    await p.settle(quiet=0.1)
    assert await p.status(message_id) == "scheduled"
    assert p.recorder.calls == []

    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await p.wait_status(message_id, "sent")


async def test_published_ahead_the_worker_waits_until_send_at(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """A tick whose look-ahead covers 09:00 publishes early; the provider hears
    nothing until (send_at - now) has passed."""
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)
    loop = asyncio.get_running_loop()
    now = ADA_SEND_AT - dt.timedelta(seconds=0.3)
    manual_clock.set(now)
    before_tick = loop.time()
    assert await p.scheduler.tick(now, ahead=dt.timedelta(seconds=62)) == 1
    assert await p.status(message_id) in ("queued", "sending")

    await asyncio.sleep(0.15)
    assert p.recorder.calls == []
    assert await p.status(message_id) == "sending"  # taken, waiting for its time
    manual_clock.set(ADA_SEND_AT)  # the clock has moved on meanwhile
    await p.wait_status(message_id, "sent")
    await p.settle()
    assert len(p.recorder.calls) == 1
    assert p.recorder.calls[0].loop_at - before_tick >= 0.3


async def test_published_ahead_the_provider_is_called_no_earlier_than_send_at_by_a_running_clock(
    make_pipeline: MakePipeline,
) -> None:
    """With a clock that runs (like the system clock), the call arrives at or after send_at."""
    running = clock_mod.OffsetClock(ADA_SEND_AT - dt.timedelta(seconds=0.4))
    p = await make_pipeline(clock=running)
    user_id = await p.add_user(now=BEFORE)
    message_id = (await p.only_row(user_id))["id"]
    assert await p.scheduler.tick(running.now(), ahead=dt.timedelta(seconds=62)) == 1
    await p.wait_status(message_id, "sent")
    await p.settle()
    assert len(p.recorder.calls) == 1
    assert p.recorder.calls[0].clock_at >= ADA_SEND_AT
    assert (await p.row(message_id))["sent_at"] >= ADA_SEND_AT


async def test_the_worker_never_calls_the_provider_while_its_clock_reads_before_send_at(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """docs/ARCHITECTURE.md §1 "never before it" with the injected clock (§4.3): if the clock
    still reads before send_at when the worker's wait is over (clock stepped back,
    wall clock slower than the loop's monotonic clock), the worker must not send."""
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)
    early = ADA_SEND_AT - dt.timedelta(seconds=0.3)
    manual_clock.set(early)
    assert await p.scheduler.tick(early, ahead=dt.timedelta(seconds=62)) == 1

    await asyncio.sleep(0.8)  # the worker's 0.3 s wait is long over; the clock is not at 09:00
    early_calls = [c.clock_at for c in p.recorder.calls if c.clock_at < ADA_SEND_AT]
    assert early_calls == [], f"provider called while the clock read {early_calls}"

    manual_clock.set(ADA_SEND_AT)
    await p.wait_status(message_id, "sent")
    await p.settle()
    assert len(p.recorder.calls) == 1


# -- time zones, leap days, DST --------------------------------------------------


async def test_users_east_of_utc_plus_9_get_theirs_on_their_local_date(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """Kiritimati (UTC+14) at 2027-01-14 19:00Z, Tokyo (UTC+9) at 2027-01-15 00:00Z."""
    provider = _provider()
    p = await make_pipeline(provider=provider)
    manual_clock.set(BEFORE)
    kiri = await p.add_user(first="Kiri", email="kiri@example.com", location="Pacific/Kiritimati")
    tokyo = await p.add_user(first="Aki", email="aki@example.com", location="Asia/Tokyo")
    kiri_row = await p.only_row(kiri)
    tokyo_row = await p.only_row(tokyo)
    assert kiri_row["occasion_date"] == tokyo_row["occasion_date"] == dt.date(2027, 1, 15)
    assert kiri_row["send_at"] == dt.datetime(2027, 1, 14, 19, 0, tzinfo=UTC)
    assert tokyo_row["send_at"] == dt.datetime(2027, 1, 15, 0, 0, tzinfo=UTC)

    async def tick_at(when: dt.datetime) -> int:
        manual_clock.set(when)
        return await p.scheduler.tick(when)

    assert await tick_at(dt.datetime(2027, 1, 14, 18, 59, 59, tzinfo=UTC)) == 0
    assert await tick_at(dt.datetime(2027, 1, 14, 19, 0, tzinfo=UTC)) == 1
    await p.wait_status(kiri_row["id"], "sent")
    assert await tick_at(dt.datetime(2027, 1, 14, 23, 59, 59, tzinfo=UTC)) == 0
    assert await p.status(tokyo_row["id"]) == "scheduled"
    assert await tick_at(dt.datetime(2027, 1, 15, 0, 0, tzinfo=UTC)) == 1
    await p.wait_status(tokyo_row["id"], "sent")
    await p.settle()
    assert provider.by_email == {"kiri@example.com": 1, "aki@example.com": 1}
    assert (await p.row(kiri_row["id"]))["sent_at"] == local("Pacific/Kiritimati", 2027, 1, 15)


async def test_a_29_february_birthday_is_sent_on_28_february_2027(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider()
    p = await make_pipeline(provider=provider)
    manual_clock.set(dt.datetime(2027, 2, 1, tzinfo=UTC))
    user_id = await p.add_user(birthday=dt.date(2000, 2, 29), location="Europe/London")
    row = await p.only_row(user_id)
    assert row["occasion_date"] == dt.date(2027, 2, 28)
    assert row["send_at"] == dt.datetime(2027, 2, 28, 9, 0, tzinfo=UTC)

    manual_clock.set(dt.datetime(2027, 2, 28, 8, 59, 59, tzinfo=UTC))
    assert await p.scheduler.tick(manual_clock.now()) == 0
    manual_clock.set(row["send_at"])
    assert await p.scheduler.tick(manual_clock.now()) == 1
    await p.wait_status(row["id"], "sent")
    await p.settle()
    assert provider.by_key == {str(row["id"]): 1}
    rows = await p.rows(user_id)
    assert [(r["occasion_date"], r["status"]) for r in rows] == [
        (dt.date(2027, 2, 28), "sent"), (dt.date(2028, 2, 29), "scheduled")]
    assert rows[1]["send_at"] == dt.datetime(2028, 2, 29, 9, 0, tzinfo=UTC)


async def test_no_greeting_an_hour_early_across_dst_new_york_in_july_is_13z(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    p = await make_pipeline()
    manual_clock.set(BEFORE)  # created in winter (EST), sent in summer (EDT)
    user_id = await p.add_user(birthday=dt.date(1990, 7, 4))
    row = await p.only_row(user_id)
    assert row["send_at"] == dt.datetime(2027, 7, 4, 13, 0, tzinfo=UTC)
    for when in (dt.datetime(2027, 7, 4, 12, 0, tzinfo=UTC),  # 09:00 if it were EST
                 dt.datetime(2027, 7, 4, 12, 59, 59, tzinfo=UTC)):
        manual_clock.set(when)
        assert await p.scheduler.tick(when) == 0
    await p.settle(quiet=0.1)
    assert p.recorder.calls == []
    manual_clock.set(row["send_at"])
    assert await p.scheduler.tick(row["send_at"]) == 1
    await p.wait_status(row["id"], "sent")


# -- retries -------------------------------------------------------------------


async def test_5xx_is_retried_with_backoff_until_sent_and_accepted_once(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider(error_rate=1.0)
    p = await make_pipeline(provider=provider,
                            config=dataclasses.replace(FAST, max_retries=50))
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1

    await eventually(lambda: provider.errors >= 3)
    provider.error_rate = 0.0
    sent = await p.wait_status(message_id, "sent")
    await p.settle()

    calls = p.recorder.for_key(message_id)
    assert sent["attempts"] == len(calls) > 1
    assert provider.by_key == {str(message_id): 1}
    assert sent["last_error"] is None
    await _assert_next_year_planned(p, message_id)


async def test_timeouts_are_retried_until_sent_and_accepted_once(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """The provider hangs; the 200 ms client timeout gives up and the worker retries."""
    provider = _provider(timeout_rate=1.0)
    p = await make_pipeline(provider=provider,
                            config=dataclasses.replace(FAST, max_retries=50,
                                                       email_timeout_ms=200))
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1

    await eventually(lambda: provider.hangs >= 2)
    retrying = await p.row(message_id)
    assert retrying["status"] in ("retrying", "queued", "sending")
    provider.timeout_rate = 0.0
    sent = await p.wait_status(message_id, "sent")
    await p.settle()

    assert sent["attempts"] == len(p.recorder.for_key(message_id)) >= 3
    assert provider.by_key == {str(message_id): 1}
    await _assert_next_year_planned(p, message_id)


async def test_a_400_answer_fails_at_once_without_retry(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    async def reject(request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid email"}, status=400)

    app = web.Application()
    app.router.add_post("/send-email", reject)
    p = await make_pipeline(app=app)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    failed = await p.wait_status(message_id, "failed")
    await p.settle(quiet=0.2)

    assert failed["attempts"] == 1
    assert failed["last_error"].startswith("HTTP 400")
    assert failed["sent_at"] is None
    assert len(p.recorder.calls) == 1
    await _assert_next_year_planned(p, message_id)


async def test_with_max_retries_2_an_always_500_provider_fails_after_exactly_3_attempts(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider(error_rate=1.0)
    p = await make_pipeline(provider=provider, config=dataclasses.replace(FAST, max_retries=2))
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    failed = await p.wait_status(message_id, "failed")
    await p.settle(quiet=0.2)

    assert failed["attempts"] == 3
    assert len(p.recorder.for_key(message_id)) == 3
    assert provider.errors == 3
    assert failed["last_error"].startswith("HTTP 500")
    assert provider.accepted == []
    await _assert_next_year_planned(p, message_id)


# -- the circuit breaker --------------------------------------------------------


async def test_breaker_opens_defers_without_counting_attempts_then_probes_and_recovers(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider(error_rate=1.0)
    breaker = retry.Breaker(threshold_pct=50, reset_s=30.0, window_s=60.0, min_calls=10)
    p = await make_pipeline(provider=provider, breaker=breaker,
                            config=dataclasses.replace(FAST, max_retries=100,
                                                       email_timeout_ms=2000))
    manual_clock.set(BEFORE)
    users = [await p.add_user(first=f"U{i}", email=f"u{i}@example.com") for i in range(12)]
    ids = [(await p.only_row(u))["id"] for u in users]
    now = ADA_SEND_AT
    manual_clock.set(now)
    assert await p.scheduler.tick(now) == 12

    # Failing calls open the breaker; every greeting is then deferred.
    await eventually(lambda: breaker.state is BreakerState.OPEN)

    async def all_deferred() -> bool:
        rows = await p.pool.fetch("SELECT * FROM messages WHERE id = ANY($1)", ids)
        return all(r["status"] == "retrying" and r["due_at"] > now + dt.timedelta(seconds=20)
                   for r in rows)

    await eventually(all_deferred)
    await p.settle()
    calls_while_open = len(p.recorder.calls)
    assert calls_while_open >= breaker.min_calls
    await asyncio.sleep(0.3)
    assert len(p.recorder.calls) == calls_while_open  # nothing goes out while it is open
    for message_id in ids:
        row = await p.row(message_id)
        # The deferral is not an attempt: attempts == provider calls made for it.
        assert row["attempts"] == len(p.recorder.for_key(message_id))
    assert breaker.state is BreakerState.OPEN
    assert provider.accepted == []

    # CIRCUIT_BREAKER_RESET_TIMEOUT later the provider is healthy again.
    provider.error_rate = 0.0
    provider.latency_ms = 300
    breaker.opened_at -= breaker.reset_s
    now += dt.timedelta(seconds=31)
    manual_clock.set(now)
    assert await p.scheduler.tick(now) == 12
    await asyncio.sleep(0.15)
    assert len(p.recorder.calls) == calls_while_open + 1  # one probe, the rest deferred
    assert _state(breaker) is BreakerState.HALF_OPEN

    for message_id in ids:
        await p.wait_status(message_id, "sent")
    await p.settle()
    assert _state(breaker) is BreakerState.CLOSED
    assert provider.by_key == {str(i): 1 for i in ids}
    for message_id in ids:
        row = await p.row(message_id)
        assert row["attempts"] == len(p.recorder.for_key(message_id))


async def test_a_provider_that_cannot_be_reached_costs_no_attempt_and_gets_it_when_back(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """The provider down for a single greeting (far below the breaker's rate):
    with QUEUE_MAX_RETRIES 0 one counted attempt would fail it, yet it waits,
    probe after probe, and is sent once the provider is back."""
    provider = _provider()
    breaker = retry.Breaker(threshold_pct=50, reset_s=30.0, window_s=10.0, min_calls=10)
    p = await make_pipeline(provider=provider, breaker=breaker,
                            config=dataclasses.replace(FAST, max_retries=0))
    reachable = p.emailer.url
    p.emailer.url = f"http://127.0.0.1:{free_port()}/send-email"  # refused
    message_id = await _ada_due(p, manual_clock)
    now = ADA_SEND_AT
    manual_clock.set(now)
    assert await p.scheduler.tick(now) == 1

    for _probe in range(3):  # the first call, then two probes, none connecting
        await eventually(lambda: _state(breaker) is BreakerState.OPEN)
        row = await p.wait_status(message_id, "retrying")
        assert row["attempts"] == 0
        assert row["last_error"].startswith("connection error: ClientConnectorError")
        # due when the breaker probes again (its reset timeout, less the moments since)
        assert now + dt.timedelta(seconds=29) < row["due_at"] <= now + dt.timedelta(seconds=30)
        assert row["called_at"] is None
        breaker.opened_at -= breaker.reset_s  # the breaker's reset timeout passes
        now += dt.timedelta(seconds=31)
        manual_clock.set(now)
        assert await p.scheduler.tick(now) == 1
        await eventually(lambda: _state(breaker) is not BreakerState.HALF_OPEN)
    assert p.recorder.calls == []

    # The last tick's probe is still unanswered; the provider comes back.
    await p.wait_status(message_id, "retrying")
    p.emailer.url = reachable
    breaker.opened_at -= breaker.reset_s
    now += dt.timedelta(seconds=31)
    manual_clock.set(now)
    assert await p.scheduler.tick(now) == 1
    sent = await p.wait_status(message_id, "sent")
    await p.settle()
    assert sent["attempts"] == 1
    assert provider.by_key == {str(message_id): 1}
    assert _state(breaker) is BreakerState.CLOSED
    assert [c.body["message"] for c in p.recorder.calls] == [BIRTHDAY_TEXT]
    await _assert_next_year_planned(p, message_id)


# -- redelivery -------------------------------------------------------------------


async def _claim(p: Pipeline, now: dt.datetime) -> list[uuid.UUID]:
    """Move due rows to queued the way the tick does, without publishing."""
    return await store.claim_due(p.pool, now, 1000, now + dt.timedelta(minutes=10), now)


async def test_the_same_id_published_twice_makes_one_provider_call(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider()
    p = await make_pipeline(provider=provider)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await _claim(p, ADA_SEND_AT) == [message_id]
    await p.broker.publish([message_id, message_id])
    await p.wait_status(message_id, "sent")
    await p.settle()
    assert [m.body for m in p.deliveries] == [str(message_id).encode()] * 2
    assert len(p.recorder.calls) == 1
    assert provider.by_key == {str(message_id): 1}
    assert (await p.row(message_id))["attempts"] == 1


async def test_a_delivery_of_an_already_sent_row_is_acked_and_dropped(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    sent = await p.wait_status(message_id, "sent")
    await p.settle()

    await p.broker.publish([message_id, message_id])
    await p.settle()
    assert len(p.deliveries) == 3
    assert len(p.recorder.calls) == 1
    assert await p.row(message_id) == sent
    # Acked, not merely held: once the worker's connection is gone nothing comes back.
    await p.disconnect()
    assert await p.ready_count() == 0
    assert await p.ready_count(f"{p.queue}.dead") == 0


async def test_a_consumer_crash_mid_send_redelivers_but_the_provider_is_called_once(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """Worker A's channel dies while the provider is answering, before its ack:
    RabbitMQ redelivers the id to worker B, which finds the row sending and drops it."""
    provider = _provider(latency_ms=400)
    p = await make_pipeline(provider=provider,
                            config=dataclasses.replace(FAST, email_timeout_ms=2000))
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await eventually(lambda: len(p.recorder.calls) == 1)  # A is mid-send
    assert len(p.deliveries) == 1

    await p.another_worker()  # B
    await p.deliveries[0].channel.close()  # A's channel dies, nothing acked
    await eventually(lambda: len(p.deliveries) == 2)
    redelivery = p.deliveries[1]
    assert redelivery.body == str(message_id).encode()
    assert isinstance(redelivery.delivery, pamqp_commands.Basic.Deliver)
    assert redelivery.delivery.redelivered

    sent = await p.wait_status(message_id, "sent")
    await p.settle(quiet=0.3)
    assert len(p.recorder.calls) == 1
    assert provider.by_key == {str(message_id): 1}
    assert sent["attempts"] == 1
    await p.disconnect()  # every connection gone: anything unacked would be ready again
    assert await p.ready_count() == 0


async def test_after_a_missed_heartbeat_the_broker_reconnects_and_the_worker_consumes_again(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """broker.py promises to reconnect and re-subscribe when the connection is lost.
    A missed heartbeat makes aiormq cancel the connection's reader task (that is
    what its heartbeat monitor does); the broker must come back by itself."""
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await p.wait_status(message_id, "sent")
    connection = p.deliveries[0].channel.connection
    connection._reader_task.cancel()  # type: ignore[attr-defined]
    await eventually(lambda: connection.is_closed)

    try:
        await eventually(lambda: p.broker.consuming, timeout=5.0)
    except AssertionError:
        raise AssertionError(
            "the broker did not reconnect after its connection was lost") from None
    # The worker consumes again: next year's greeting goes out when due.
    nxt = (await p.rows((await p.row(message_id))["user_id"]))[-1]
    manual_clock.set(nxt["send_at"])
    assert await p.scheduler.tick(nxt["send_at"]) == 1
    await p.wait_status(nxt["id"], "sent")


async def test_two_concurrent_deliveries_of_one_id_make_one_provider_call(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider(latency_ms=50)
    p = await make_pipeline(provider=provider, worker=False)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await _claim(p, ADA_SEND_AT) == [message_id]
    assert p.worker is not None
    await asyncio.gather(p.worker.deliver(message_id), p.worker.deliver(message_id))
    row = await p.row(message_id)
    assert row["status"] == "sent"
    assert row["attempts"] == 1
    assert len(p.recorder.calls) == 1
    assert provider.by_key == {str(message_id): 1}


async def test_a_message_that_is_not_an_id_is_acked_and_dropped(
    make_pipeline: MakePipeline,
) -> None:
    p = await make_pipeline()
    connection = await aiormq.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.basic_publish(b"not-a-uuid", exchange=p.queue, routing_key=p.queue)
        await channel.basic_publish(b"\xff\xfe", exchange=p.queue, routing_key=p.queue)
    finally:
        await connection.close()
    await eventually(lambda: len(p.deliveries) == 2)
    await p.settle()
    await p.disconnect()
    assert await p.ready_count() == 0
    assert await p.ready_count(f"{p.queue}.dead") == 0
    assert p.recorder.calls == []


# -- downtime -------------------------------------------------------------------


async def test_a_greeting_26_hours_late_is_sent_on_the_next_tick(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider()
    p = await make_pipeline(provider=provider)
    message_id = await _ada_due(p, manual_clock)
    back = ADA_SEND_AT + dt.timedelta(hours=26)
    manual_clock.set(back)
    assert await p.scheduler.tick(back) == 1
    sent = await p.wait_status(message_id, "sent")
    await p.settle()
    assert sent["sent_at"] == back
    assert provider.by_key == {str(message_id): 1}
    await _assert_next_year_planned(p, message_id)


async def test_a_greeting_exactly_max_lateness_late_is_still_sent(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)
    back = ADA_SEND_AT + dt.timedelta(days=7)
    manual_clock.set(back)
    assert await p.scheduler.tick(back) == 1
    await p.wait_status(message_id, "sent")


async def test_a_greeting_older_than_max_lateness_expires_is_listed_replanned_and_redrivable(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider()
    p = await make_pipeline(provider=provider)
    message_id = await _ada_due(p, manual_clock)
    back = ADA_SEND_AT + dt.timedelta(days=7, seconds=1)
    manual_clock.set(back)
    assert await p.scheduler.tick(back) == 0
    await p.settle(quiet=0.1)

    expired = await p.row(message_id)
    assert expired["status"] == "expired"
    assert expired["last_error"] == "later than MAX_LATENESS"
    assert p.recorder.calls == []
    listed = await store.list_messages(p.pool, "expired", None, None, 100)
    assert [r["id"] for r in listed] == [message_id]
    await _assert_next_year_planned(p, message_id)

    # POST /messages/{id}/retry: an operator re-drives it.
    redriven = await store.redrive(p.pool, message_id, back)
    assert redriven is not None
    assert redriven["status"] == "retrying"
    assert redriven["attempts"] == 0
    assert await p.scheduler.tick(back) == 1
    sent = await p.wait_status(message_id, "sent")
    await p.settle()
    assert sent["attempts"] == 1
    assert provider.by_key == {str(message_id): 1}
    await _assert_next_year_planned(p, message_id)  # still exactly one next-year row


async def test_a_greeting_that_became_too_late_while_queued_is_expired_by_the_worker(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """Published in time but picked up past MAX_LATENESS: expired, not sent, next year planned."""
    p = await make_pipeline(worker=False)
    message_id = await _ada_due(p, manual_clock)
    now = ADA_SEND_AT + dt.timedelta(days=6)
    manual_clock.set(now)
    assert await p.scheduler.tick(now) == 1
    manual_clock.set(ADA_SEND_AT + dt.timedelta(days=7, seconds=1))
    await p.start_worker()
    expired = await p.wait_status(message_id, "expired")
    await p.settle()
    assert p.recorder.calls == []
    assert expired["last_error"] == "later than MAX_LATENESS"
    await _assert_next_year_planned(p, message_id)


# -- recovery -------------------------------------------------------------------


async def test_a_row_stuck_in_sending_past_its_lease_is_recovered_and_sent_once(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider()
    p = await make_pipeline(provider=provider, worker=False)
    message_id = await _ada_due(p, manual_clock)
    now = ADA_SEND_AT
    manual_clock.set(now)
    assert await p.scheduler.tick(now) == 1
    # A worker took it and died before calling the provider; its delivery stays queued.
    assert await store.start_sending(p.pool, [message_id], dt.timedelta(minutes=5), now)
    lease = (await p.row(message_id))["lease_until"]
    assert lease == now + dt.timedelta(minutes=5)

    await p.start_worker()
    await p.settle()  # the crashed worker's redelivery finds the row sending: dropped
    assert p.recorder.calls == []
    assert await p.status(message_id) == "sending"
    assert await p.scheduler.recover(lease - dt.timedelta(seconds=1)) == 0

    now = lease + dt.timedelta(seconds=1)
    manual_clock.set(now)
    duplicates = metrics.POSSIBLE_DUPLICATES.labels("lease_expired")
    counted_before = duplicates._value.get()
    assert await p.scheduler.recover(now) == 1
    recovered = await p.row(message_id)
    assert recovered["status"] == "retrying"
    assert recovered["due_at"] == now
    assert recovered["last_error"] == "lease expired in sending"
    # It never reached claim_call, so the provider cannot have it: not counted
    # as a possible duplicate (the metric counts only the two real windows).
    assert duplicates._value.get() == counted_before
    assert await p.scheduler.tick(now) == 1
    sent = await p.wait_status(message_id, "sent")
    await p.settle()
    assert provider.by_key == {str(message_id): 1}
    assert len(p.recorder.calls) == 1
    assert sent["attempts"] == 2


async def test_a_row_stuck_in_queued_past_its_lease_is_recovered_and_sent_once(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    provider = _provider()
    p = await make_pipeline(provider=provider, worker=False)
    message_id = await _ada_due(p, manual_clock)
    now = ADA_SEND_AT
    manual_clock.set(now)
    assert await p.scheduler.tick(now) == 1
    await p.purge()  # the published id is lost
    await p.start_worker()
    lease = (await p.row(message_id))["lease_until"]
    assert lease > now
    assert await p.scheduler.recover(lease - dt.timedelta(seconds=1)) == 0
    assert await p.status(message_id) == "queued"

    now = lease + dt.timedelta(seconds=1)
    manual_clock.set(now)
    assert await p.scheduler.recover(now) == 1
    recovered = await p.row(message_id)
    assert recovered["status"] == "retrying"
    assert recovered["last_error"] == "lease expired in queued"
    assert await p.scheduler.tick(now) == 1
    sent = await p.wait_status(message_id, "sent")
    await p.settle()
    assert provider.by_key == {str(message_id): 1}
    assert sent["attempts"] == 1


async def test_an_answer_that_arrives_after_recovery_took_the_row_back_is_recorded_as_sent(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """The sending lease ran out while the provider was answering: the late 200 still
    marks the row sent, so the next tick does not send it again."""
    provider = _provider(latency_ms=500)
    p = await make_pipeline(provider=provider,
                            config=dataclasses.replace(FAST, email_timeout_ms=3000))
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await eventually(lambda: len(p.recorder.calls) == 1)
    lease = (await p.row(message_id))["lease_until"]
    # The first sweep past the lease grants the called row one more lease; the
    # second takes it back.
    grace = lease + dt.timedelta(seconds=1)
    assert await p.scheduler.recover(grace) == 0
    assert await p.status(message_id) == "sending"
    late = grace + p.scheduler.cfg.call_lease + dt.timedelta(seconds=1)
    manual_clock.set(late)
    assert await p.scheduler.recover(late) == 1
    assert await p.status(message_id) == "retrying"

    sent = await p.wait_status(message_id, "sent")
    assert await p.scheduler.tick(late) == 0
    await p.settle()
    assert len(p.recorder.calls) == 1
    assert provider.by_key == {str(message_id): 1}
    assert sent["sent_at"] == late
    await _assert_next_year_planned(p, message_id)


async def test_a_greeting_of_a_user_deleted_after_it_was_published_is_not_sent(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    p = await make_pipeline(worker=False)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    user_id = (await p.row(message_id))["user_id"]
    assert await greetings.delete_user(p.pool, user_id, ADA_SEND_AT)
    await p.start_worker()
    await eventually(lambda: len(p.deliveries) == 1)
    await p.settle()
    assert await p.status(message_id) == "cancelled"
    assert p.recorder.calls == []


async def test_a_greeting_of_a_user_deleted_while_it_waits_for_nine_is_not_sent(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """docs/ARCHITECTURE.md §1: DELETE /user cancels pending greetings.  A greeting published
    ahead and waiting in the worker for 09:00 has not been sent yet: deleting the
    user at 08:59:59.5 must stop it."""
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)
    early = ADA_SEND_AT - dt.timedelta(seconds=0.5)
    manual_clock.set(early)
    assert await p.scheduler.tick(early, ahead=dt.timedelta(seconds=62)) == 1
    await p.wait_status(message_id, "sending")  # taken, waiting until due
    user_id = (await p.row(message_id))["user_id"]
    assert await greetings.delete_user(p.pool, user_id, early)
    manual_clock.set(ADA_SEND_AT)
    await asyncio.sleep(0.8)
    await p.settle()
    assert [c.body for c in p.recorder.calls] == []


# -- concurrent schedulers ------------------------------------------------------------


async def test_two_schedulers_ticking_concurrently_publish_each_due_id_exactly_once(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock, pool: asyncpg.Pool
) -> None:
    p = await make_pipeline(worker=False, batch=25)
    manual_clock.set(BEFORE)
    send_at = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)

    async def add(i: int) -> None:
        await p.add_user(first=f"U{i}", email=f"u{i}@example.com", location="UTC")

    for start in range(0, 300, 50):
        await asyncio.gather(*(add(i) for i in range(start, start + 50)))
    due = {r["id"] for r in await pool.fetch("SELECT id FROM messages WHERE send_at = $1",
                                             send_at)}
    assert len(due) == 300

    received: collections.Counter[str] = collections.Counter()
    connection = await aiormq.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()

        async def on_message(message: Any) -> None:
            received[message.body.decode()] += 1

        await channel.basic_consume(p.queue, on_message, no_ack=True)
        other = scheduler_mod.Scheduler(pool, await p.another_broker(), manual_clock,
                                        config.SchedulerConfig(batch=25))
        manual_clock.set(send_at)
        counts = await asyncio.gather(p.scheduler.tick(send_at), other.tick(send_at))
        assert sum(counts) == 300
        assert min(counts) > 0  # they really interleaved
        await eventually(lambda: sum(received.values()) >= 300)
        await asyncio.sleep(0.2)  # anything extra would arrive now
    finally:
        await connection.close()

    assert sum(received.values()) == 300
    assert set(received) == {str(i) for i in due}
    assert max(received.values()) == 1
    statuses = await pool.fetch("SELECT status, count(*) FROM messages WHERE send_at = $1 "
                                "GROUP BY status", send_at)
    assert [(r["status"], r["count"]) for r in statuses] == [("queued", 300)]


# -- faults found in review ----------------------------------------------------------


async def test_a_user_deleted_while_its_greeting_ends_gets_no_next_greeting(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """Planning next year's greeting locks the user: a DELETE that lands meanwhile
    either cancels the new row or leaves none; a deleted user never keeps one."""
    p = await make_pipeline(provider=_provider(latency_ms=300),
                            config=dataclasses.replace(FAST, email_timeout_ms=3000))
    message_id = await _ada_due(p, manual_clock)
    user_id = (await p.row(message_id))["user_id"]
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await eventually(lambda: len(p.recorder.calls) == 1)  # the provider is answering
    async with p.pool.acquire() as conn, conn.transaction():
        # Hold the user's row as a DELETE would, while the greeting ends.
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)

        async def worker_waits_for_the_user() -> bool:
            return bool(await p.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"))

        await eventually(worker_waits_for_the_user)
        await conn.execute("UPDATE users SET deleted_at = $2 WHERE id = $1", user_id,
                           ADA_SEND_AT)
        await conn.execute(
            "UPDATE messages SET status = 'cancelled' WHERE user_id = $1 "
            "AND status IN ('scheduled', 'queued', 'retrying')", user_id)
    await p.wait_status(message_id, "sent")
    await p.settle()
    pending = [r for r in await p.rows(user_id)
               if r["status"] in ("scheduled", "queued", "retrying")]
    assert pending == []


async def test_a_failure_planning_next_year_does_not_undo_the_sent_record(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The provider said 2xx: the row is `sent` even if planning the next greeting
    fails (the daily job plans it later), so it is never sent again."""
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)

    async def broken_plan(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("planning is broken")

    monkeypatch.setattr(greetings, "plan_many", broken_plan)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await p.wait_status(message_id, "sent")
    await p.settle()
    assert len(p.recorder.calls) == 1
    monkeypatch.undo()
    assert await p.scheduler.daily(ADA_SEND_AT) == 1
    await _assert_next_year_planned(p, message_id)


async def test_a_failing_expiry_does_not_hold_up_what_is_due(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)

    async def broken_expire(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("expiry is broken")

    monkeypatch.setattr(p.scheduler, "expire", broken_expire)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await p.wait_status(message_id, "sent")


async def test_a_redrive_of_a_deleted_users_message_is_refused(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    p = await make_pipeline(worker=False)
    message_id = await _ada_due(p, manual_clock)
    user_id = (await p.row(message_id))["user_id"]
    await p.pool.execute("UPDATE messages SET status = 'failed' WHERE id = $1", message_id)
    assert await greetings.delete_user(p.pool, user_id, ADA_SEND_AT)
    assert await store.redrive(p.pool, message_id, ADA_SEND_AT) is None
    assert await p.status(message_id) == "failed"


async def test_draining_hands_back_greetings_still_waiting_without_counting_an_attempt(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """SIGTERM's drain: a greeting published ahead and waiting for 09:00 is handed
    back at once (retrying, attempts unchanged), not sent and not stuck in sending."""
    p = await make_pipeline()
    message_id = await _ada_due(p, manual_clock)
    early = ADA_SEND_AT - dt.timedelta(seconds=30)
    manual_clock.set(early)
    assert await p.scheduler.tick(early, ahead=dt.timedelta(seconds=62)) == 1
    await p.wait_status(message_id, "sending")
    assert p.worker is not None
    stopping = asyncio.get_running_loop().time()
    await p.worker.stop(grace_s=20)
    assert asyncio.get_running_loop().time() - stopping < 5
    row = await p.row(message_id)
    assert (row["status"], row["attempts"]) == ("retrying", 0)
    assert p.recorder.calls == []


async def test_a_drain_waits_for_an_accepted_greeting_to_be_recorded(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """SIGTERM's grace never cuts off a send whose 2xx is not recorded yet:
    cancelling it would leave the row in sending and re-send it later."""
    p = await make_pipeline(provider=_provider(latency_ms=300),
                            config=dataclasses.replace(FAST, email_timeout_ms=3000))
    message_id = await _ada_due(p, manual_clock)
    user_id = (await p.row(message_id))["user_id"]
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await eventually(lambda: len(p.recorder.calls) == 1)  # the provider is answering
    async with p.pool.acquire() as conn:
        lock = conn.transaction()
        await lock.start()
        # Recording the answer locks the user first: hold it so the record waits.
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
        assert p.worker is not None
        stopping = asyncio.create_task(p.worker.stop(grace_s=0.2))
        await asyncio.sleep(0.6)
        assert not stopping.done(), "the drain gave up on a send it had not recorded"
        await lock.commit()
    await stopping
    assert await p.status(message_id) == "sent"
