"""Zone rules come from the pinned tzdata package, never from the host.

Each test runs a fresh interpreter whose host zone database (PYTHONTZPATH) is
deliberately wrong: New York and Kolkata are copies of UTC, and it holds a zone
tzdata does not have.  Importing birthdayd must make every computation ignore it.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

import birthdayd

WRONG_ZONES = ("America/New_York", "Asia/Kolkata")
HOST_ONLY_ZONE = "Mars/Olympus_Mons"


@pytest.fixture
def wrong_host_zones(tmp_path: pathlib.Path) -> pathlib.Path:
    utc = importlib.resources.files("tzdata").joinpath("zoneinfo", "UTC").read_bytes()
    for name in (*WRONG_ZONES, HOST_ONLY_ZONE):
        path = tmp_path.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(utc)
    return tmp_path


def _run(script: str, tzpath: pathlib.Path, *args: str) -> Any:
    """Run ``script`` with the same birthdayd as this process, whatever the cwd."""
    source = str(pathlib.Path(birthdayd.__file__).resolve().parents[1])
    path = [source, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONTZPATH": str(tzpath), "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=tzpath,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


SEND_INSTANTS = """
import datetime as dt, json, sys, zoneinfo

NAMES = ("America/New_York", "Asia/Kolkata")
JAN = dt.datetime(2027, 1, 15, 12, tzinfo=dt.UTC)

def offsets():
    # no_cache: a probe must not leave its zone in ZoneInfo's cache.
    return {n: zoneinfo.ZoneInfo.no_cache(n).utcoffset(JAN).total_seconds() for n in NAMES}

out = {"imported": "birthdayd" in sys.modules, "tzpath_before": list(zoneinfo.TZPATH),
       "offsets_before": offsets()}

import birthdayd
from birthdayd import calendar_rules

now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
origins = {"jan": dt.date(1990, 1, 15), "jul": dt.date(1990, 7, 4)}
out["tzpath_after"] = list(zoneinfo.TZPATH)
out["offsets_after"] = offsets()
out["send_at"] = {
    f"{name} {key}": calendar_rules.next_greeting(origin, zoneinfo.ZoneInfo(name), 9, now)
    .send_at.isoformat()
    for name in NAMES for key, origin in origins.items()
}
print(json.dumps(out))
"""


def test_send_instants_ignore_the_host_zone_database(wrong_host_zones: pathlib.Path) -> None:
    out = _run(SEND_INSTANTS, wrong_host_zones)
    # The fake database is effective until birthdayd is imported: without the
    # pinning, New York and Kolkata would be UTC and this test would prove nothing.
    assert out["imported"] is False
    assert out["tzpath_before"] == [str(wrong_host_zones)]
    assert out["offsets_before"] == {"America/New_York": 0, "Asia/Kolkata": 0}
    # Once imported, only the tzdata package answers.
    assert out["tzpath_after"] == []
    assert out["offsets_after"] == {"America/New_York": -5 * 3600, "Asia/Kolkata": 5.5 * 3600}
    assert out["send_at"] == {
        "America/New_York jan": "2027-01-15T14:00:00+00:00",
        "America/New_York jul": "2026-07-04T13:00:00+00:00",
        "Asia/Kolkata jan": "2027-01-15T03:30:00+00:00",
        "Asia/Kolkata jul": "2026-07-04T03:30:00+00:00",
    }


VALIDATION = """
import datetime as dt, importlib.resources, json, sys

import birthdayd
from birthdayd import validation

NOW = dt.datetime(2027, 1, 15, 20, 0, tzinfo=dt.UTC)  # already the 16th in Kolkata
BODY = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com",
        "birthday": "1990-01-15"}

def errors(**fields):
    return validation.validate_user({**BODY, **fields}, NOW)[1]

tzdata = importlib.resources.files("tzdata").joinpath("zones").read_text("utf-8").split()
print(json.dumps({
    "tzdata": tzdata,
    "refused": [z for z in tzdata if errors(location=z)],
    "kolkata_today": errors(location="Asia/Kolkata", birthday="2027-01-16"),
    "host_only": errors(location=sys.argv[1]),
}))
"""


def test_validation_accepts_the_tzdata_zones_whatever_the_host_has(
    wrong_host_zones: pathlib.Path,
) -> None:
    out = _run(VALIDATION, wrong_host_zones, HOST_ONLY_ZONE)
    assert len(out["tzdata"]) > 400
    assert {"America/New_York", "Asia/Kolkata", "Europe/London", "UTC"} <= set(out["tzdata"])
    # Every tzdata zone is accepted, though the host has almost none of them.
    assert out["refused"] == []
    # "Today" is judged by tzdata's rules, not the host's wrong Kolkata (UTC).
    assert out["kolkata_today"] == {}
    # A zone only the host has is not one: another replica may lack it.
    assert set(out["host_only"]) == {"location"}
