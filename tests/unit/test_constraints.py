"""constraints.txt pins every distribution birthdayd installs, and is used.

The image and CI install with ``-c constraints.txt``; a dependency added, dropped
or upgraded without regenerating the file (make constraints) fails here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("constraints_script",
                                                  ROOT / "scripts" / "constraints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    return pins


def test_every_installed_runtime_and_test_distribution_is_pinned_at_its_version() -> None:
    script = _script()
    pins = _pins()
    needed = script.closure(extras=("test",))
    assert {n: v for n, v in needed.items() if pins.get(n) != v} == {}
    assert sorted(set(pins) - set(needed)) == [], "pins for distributions nothing needs"
    # The runtime closure (what the image gets) is a real subset, not the whole file.
    assert {"yarl", "multidict", "attrs", "pamqp"} <= set(script.closure()) < set(pins)


def test_the_file_is_exactly_what_the_generator_writes() -> None:
    assert (ROOT / "constraints.txt").read_text() == _script().render()


def test_pyproject_direct_pins_agree_with_the_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    direct = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for text in direct:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+).*", text)
        assert match, f"{text!r} is not an exact pin"
        name = re.sub(r"[-_.]+", "-", match[1]).lower()
        assert pins[name] == match[2], name


def test_the_image_and_make_install_use_the_file() -> None:
    assert "-c constraints.txt" in (ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
