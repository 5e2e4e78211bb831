"""Logs (masked addresses, the request id) and metrics (per role, at 0 from
start-up, computed at scrape time), without servers."""

from __future__ import annotations

import asyncio
import io
import logging
import sys

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from birthdayd import logs, metrics, retry


@pytest.mark.parametrize(("text", "masked"), [
    ("ada@example.com", "a***@example.com"),
    ("to Ada.Lovelace+greet@mail.example.co.uk now", "to A***@mail.example.co.uk now"),
    ('{"email": "bob@example.org"}', '{"email": "b***@example.org"}'),
    ("two: a@x.io, b@y.io.", "two: a***@x.io, b***@y.io."),
    ("Key (email)=(zoë@example.com) exists", "Key (email)=(z***@example.com) exists"),
    ("none here, user@localhost, @example.com", "none here, user@localhost, @example.com"),
])
def test_addresses_are_masked_to_first_letter_and_domain(text: str, masked: str) -> None:
    assert logs.mask_emails(text) == masked


def _log(fmt: str, level: int, *args: object, **kw: object) -> str:
    out = io.StringIO()
    handler = logs.handler(fmt)
    handler.setStream(out)  # type: ignore[attr-defined]
    logger = logging.getLogger("test.observability")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.log(level, *args, **kw)  # type: ignore[arg-type]
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_json_lines_at_info_and_above_mask_message_fields_and_traceback() -> None:
    try:
        raise ValueError("no mailbox grace@example.com")
    except ValueError:
        exc_info = sys.exc_info()
    for level in (logging.INFO, logging.WARNING, logging.ERROR):
        line = _log("json", level, "greeting for %s failed", "ada@example.com",
                    exc_info=exc_info, extra={"email": "ada@example.com",
                                              "emails": ["bob@example.com"]})
        entry = orjson.loads(line)
        assert entry["message"] == "greeting for a***@example.com failed"
        assert entry["email"] == "a***@example.com"
        assert entry["emails"] == ["b***@example.com"]
        assert "g***@example.com" in entry["exception"]
        assert "ada@" not in line and "grace@" not in line and "bob@" not in line


def test_debug_lines_keep_the_address_whole() -> None:
    line = _log("json", logging.DEBUG, "sending to %s", "ada@example.com")
    assert orjson.loads(line)["message"] == "sending to ada@example.com"


def test_text_lines_are_masked_and_name_the_request() -> None:
    token = logs.REQUEST_ID.set("req-1")
    try:
        line = _log("text", logging.WARNING, "conflict on %s", "ada@example.com")
    finally:
        logs.REQUEST_ID.reset(token)
    assert line.rstrip().endswith("conflict on a***@example.com [request_id=req-1]")
    assert "request_id" not in _log("text", logging.WARNING, "outside any request")


def test_a_json_line_logged_during_a_request_carries_its_id() -> None:
    token = logs.REQUEST_ID.set("abc-123")
    try:
        inside = orjson.loads(_log("json", logging.INFO, "inside"))
    finally:
        logs.REQUEST_ID.reset(token)
    assert inside["request_id"] == "abc-123"
    assert "request_id" not in orjson.loads(_log("json", logging.INFO, "after"))


# -- metrics -------------------------------------------------------------------------


Samples = list[tuple[dict[str, str], float]]


def _families(roles: list[str], *collectors: Collector) -> dict[str, Samples]:
    text = generate_latest(metrics.registry(roles, collectors)).decode()
    return {f.name: [(s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


def test_each_role_registers_only_its_families() -> None:
    api = _families(["api"])
    assert not [name for name in api if name.startswith("birthdayd_")
                and not name.startswith("birthdayd_http_")]
    worker = _families(["worker"])
    assert "birthdayd_messages" in worker and "birthdayd_tick_claimed" not in worker
    scheduler = _families(["scheduler"])
    assert "birthdayd_job_runs" in scheduler and "birthdayd_send_seconds" not in scheduler


def test_every_counter_label_combination_exists_at_0_from_start_up() -> None:
    worker = _families(["worker"])
    outcomes = {(s["occasion"], s["outcome"]) for s, _ in worker["birthdayd_messages"]}
    assert outcomes >= {(o, out) for o in ("birthday", "anniversary")
                        for out in metrics.WORKER_OUTCOMES}
    assert {s["reason"] for s, _ in worker["birthdayd_possible_duplicates"]} >= {"timeout"}
    scheduler = _families(["scheduler"])
    assert {(s["job"], s["result"]) for s, _ in scheduler["birthdayd_job_runs"]} >= {
        (job, result) for job in metrics.JOBS for result in ("ok", "error")}
    assert {s["state"] for s, _ in scheduler["birthdayd_recovered"]} >= {"queued", "sending"}
    assert {s["reason"] for s, _ in scheduler["birthdayd_possible_duplicates"]} >= {
        "lease_expired"}


def test_breaker_open_drops_to_0_when_its_open_period_is_over_without_any_call() -> None:
    now = [0.0]
    breaker = retry.Breaker(threshold_pct=50, reset_s=30.0, min_calls=2)
    collector = metrics.BreakerCollector(breaker, lambda: now[0])

    def gauge() -> float:
        return _families([], collector)["birthdayd_breaker_open"][0][1]

    assert gauge() == 0
    breaker.record(0.0, ok=False)
    breaker.record(0.1, ok=False)
    assert gauge() == 1
    now[0] = 29.9
    assert gauge() == 1
    now[0] = 30.1  # nobody asked the breaker since: its state still says open
    assert breaker.state is retry.BreakerState.OPEN
    assert gauge() == 0


class _Pool:
    def get_size(self) -> int:
        return 7

    def get_idle_size(self) -> int:
        return 3

    def get_max_size(self) -> int:
        return 10


def test_the_pool_is_read_as_it_is_at_the_scrape() -> None:
    found = _families([], metrics.PoolCollector(_Pool()))
    assert found["birthdayd_db_pool_size"][0][1] == 7
    assert found["birthdayd_db_pool_in_use"][0][1] == 4
    assert found["birthdayd_db_pool_max_size"][0][1] == 10


async def test_a_hung_broker_leaves_the_backlog_reading_fresh_and_the_depths_absent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "READ_TIMEOUT_S", 0.05)
    backlog = [5]

    async def read_backlog() -> int:
        return backlog[0]

    async def hung_depth(queue: str) -> int:
        await asyncio.sleep(10)
        return 0

    readings = metrics.Readings(read_backlog, hung_depth, [("main", "q"), ("dead", "q.dead")])
    await readings.refresh()
    backlog[0] = 9
    await readings.refresh()
    found = _families([], readings)
    assert found["birthdayd_due_backlog"] == [({}, 9.0)]
    assert found["birthdayd_queue_depth"] == []


def test_http_requests_are_counted_by_route_template_with_bounded_labels() -> None:
    http = metrics.Http()
    http.expect("/users", "GET", 200)
    http.record("/user/{id}", "GET", 404, 0.002)
    http.record("/user/{id}", "GET", 404, 0.03)
    http.record("unmatched", "BREW", 405, 0.001)
    found = _families([], http)
    counts = {(s["route"], s["method"], s["status"]): v
              for s, v in found["birthdayd_http_requests"]}
    assert counts == {("/users", "GET", "200"): 0, ("/user/{id}", "GET", "404"): 2,
                      ("unmatched", "other", "405"): 1}
    latency = {(s["route"], s["le"]): v for s, v in found["birthdayd_http_request_duration_seconds"]
               if "le" in s and s["route"] == "/user/{id}"}
    assert latency[("/user/{id}", "0.001")] == 0
    assert latency[("/user/{id}", "0.0025")] == 1
    assert latency[("/user/{id}", "0.025")] == 1
    assert latency[("/user/{id}", "0.05")] == 2
    assert latency[("/user/{id}", "+Inf")] == 2
    [total] = [v for s, v in found["birthdayd_http_request_duration_seconds"]
               if s.get("route") == "/user/{id}" and "le" not in s and v > 1]
    assert total == 2  # _count; _sum is 0.032
