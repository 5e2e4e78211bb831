"""Metrics end to end: each role's /metrics against the README's table, and a
real Prometheus (the Debian package, installed by scripts/test-tools.sh)
scraping api, worker and scheduler processes while greetings are delivered,
then evaluating every dashboard query and alert rule through its HTTP API."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from prometheus_client.parser import text_string_to_metric_families

from birthdayd import greetings
from tests.e2e.conftest import UTC, Cluster, eventually, free_port, statuses

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("api", "worker", "scheduler")
Family = tuple[str, str, tuple[str, ...]]  # name, type, label names


def readme_table() -> dict[str, set[Family]]:
    """The README's metrics tables: per role, (name, type, labels) of each row."""
    row = re.compile(r"^\| `([a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|([^|]*)\|")
    per_role: dict[str, set[Family]] = {role: set() for role in ROLES}
    for line in (ROOT / "README.md").read_text().splitlines():
        if m := row.match(line):
            labels = tuple(sorted(re.findall(r"`([a-z_]+)`", m[3])))
            for role in (r.strip() for r in m[4].split(",")):
                per_role[role].add((m[1], m[2], labels))
    assert all(per_role.values()), "the README has no metrics table"
    return per_role


def exposed(text: str) -> set[Family]:
    """The families a /metrics text serves; each must have a sample, so its
    labels are known."""
    found = set()
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        assert family.samples, f"{name} has no sample"
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        found.add((name, family.type, tuple(sorted(labels))))
    return found


async def get_text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as r:
        assert r.status == 200, url
        return await r.text()


async def deliver_some(cluster: Cluster, pool: asyncpg.Pool, n: int) -> None:
    """``n`` birthdays due at 09:00Z today, created at 08:00Z, then sent."""
    for i in range(n):
        occasion_day = dt.date(1990, 1, 15)
        await greetings.create_user(pool, {
            "first_name": f"User{i}", "last_name": "Test", "email": f"user{i}@example.com",
            "birthday": occasion_day, "anniversary": occasion_day if i % 2 else None,
            "location": "UTC"}, dt.datetime(2027, 1, 15, 8, 0, tzinfo=UTC), 9)

    async def all_sent() -> bool:
        return await statuses(pool) == {"sent": n + n // 2}

    await eventually(all_sent, 30, "every greeting sent", cluster.logs)


async def api_traffic(session: aiohttp.ClientSession, url: str, email: str) -> None:
    body = {"firstName": "Ada", "lastName": "L", "birthday": "1990-03-01",
            "location": "Europe/London", "email": email}
    async with session.post(url + "/user", json=body) as r:
        assert r.status == 201
        user = await r.json()
    for path in (f"/user/{user['id']}", "/users", "/messages", "/user/nope", "/openapi.json"):
        async with session.get(url + path) as r:
            await r.read()


async def test_each_role_serves_exactly_the_readme_table(
    cluster: Cluster, pool: asyncpg.Pool
) -> None:
    """Names, types and label names, per role: nothing more, nothing less; an api
    replica serves no worker or scheduler family."""
    await cluster.start_fake()
    procs = dict(zip(ROLES, await asyncio.gather(*(cluster.start(role) for role in ROLES)),
                     strict=True))
    await deliver_some(cluster, pool, 4)
    expected = readme_table()
    async with aiohttp.ClientSession() as session:
        await api_traffic(session, procs["api"].url, "ada@example.com")
        for role, proc in procs.items():
            text = await get_text(session, proc.url + "/metrics")
            assert exposed(text) == expected[role], role
    assert cluster.errors() == []


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every Prometheus target of the dashboard, with
    Grafana's interval variables replaced as Grafana would for a short range."""
    board = json.loads((ROOT / "conf/grafana/dashboards/birthdayd.json").read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") != "prometheus":
                continue  # the Loki panel's LogQL
            expr = (target["expr"].replace("$__rate_interval", "15s")
                    .replace("$__interval", "5s").replace("$__range", "1m"))
            assert "$" not in expr.replace("$1", ""), expr
            queries.append((panel["title"], expr))
    return queries


def alert_rules() -> list[tuple[str, str]]:
    """(alert, PromQL) of every rule in conf/prometheus/alerts.yml."""
    doc = yaml.safe_load((ROOT / "conf/prometheus/alerts.yml").read_text())
    return [(rule.get("alert") or rule["record"], rule["expr"])
            for group in doc["groups"] for rule in group["rules"]]


class Prometheus:
    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: run scripts/test-tools.sh as root"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = tmp / "alerts.yml"
        shutil.copy(ROOT / "conf/prometheus/alerts.yml", rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                               for job, target in targets.items()],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = tmp / "prometheus.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [binary, f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def query(self, session: aiohttp.ClientSession, expr: str) -> dict[str, Any]:
        async with session.get(self.url + "/api/v1/query", params={"query": expr}) as r:
            answer: dict[str, Any] = await r.json()
            return answer

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


async def test_prometheus_scrapes_every_role_and_every_dashboard_query_has_data(
    cluster: Cluster, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    started = time.monotonic()
    await cluster.start_fake("--error-rate", "0.3", "--seed", "3")
    procs = dict(zip(ROLES, await asyncio.gather(
        *(cluster.start(role, QUEUE_MAX_RETRIES="20") for role in ROLES)), strict=True))
    prometheus = Prometheus(tmp_path, {f"birthdayd-{role}": proc.url.removeprefix("http://")
                                       for role, proc in procs.items()})
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(prometheus.url + "/-/ready") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    assert prometheus.popen.poll() is None, prometheus.log.read_text()
                    return False

            await eventually(ready, 15, "Prometheus ready")
            await api_traffic(session, procs["api"].url, "ada@example.com")
            await deliver_some(cluster, pool, 20)
            await api_traffic(session, procs["api"].url, "grace@example.com")

            # Every dashboard query returns data (rates need two scrapes in their window).
            missing: dict[str, Any] = {}

            async def all_have_data() -> bool:
                missing.clear()
                for title, expr in dashboard_queries():
                    answer = await prometheus.query(session, expr)
                    assert answer["status"] == "success", (title, expr, answer)
                    if not answer["data"]["result"]:
                        missing[title] = expr
                return not missing

            async def without_data() -> dict[str, Any]:
                return missing

            await eventually(all_have_data, 20, "data for every dashboard query",
                             state=without_data)

            # Every alert expression parses and evaluates; Prometheus itself
            # evaluated each rule without error.
            for name, expr in alert_rules():
                answer = await prometheus.query(session, expr)
                assert answer["status"] == "success", (name, answer)

            async def rules_evaluated() -> list[dict[str, Any]]:
                async with session.get(prometheus.url + "/api/v1/rules") as r:
                    rules = [rule for group in (await r.json())["data"]["groups"]
                             for rule in group["rules"]]
                done = all(rule["lastEvaluation"] > "2000" for rule in rules)
                return rules if done else []

            rules = await eventually(rules_evaluated, 10, "every rule evaluated")
            assert {rule["name"] for rule in rules} == {name for name, _ in alert_rules()}
            assert [r["name"] for r in rules if r["health"] != "ok"] == []
            # Nothing is wrong here, so no birthdayd alert fires (the ones about
            # exporters this test does not run have no series).
            firing = [r["name"] for r in rules if r["state"] == "firing"]
            assert firing == [], firing

            # The lateness histogram is on the dashboard, and counted every send.
            answer = await prometheus.query(session, "sum(birthdayd_lateness_seconds_count)")
            assert float(answer["data"]["result"][0]["value"][1]) == 30
    finally:
        prometheus.stop()
    assert cluster.errors() == []
    assert time.monotonic() - started < 50
