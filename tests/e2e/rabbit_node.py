"""A private RabbitMQ node for fault tests that stop, restart or break the broker.

The RabbitMQ on 127.0.0.1:5672 is shared (other engineers' tests, other
sessions): a test that runs ``stop_app`` or deletes queues under a daemon must
not touch it.  :func:`rabbit_node` starts a second, throw-away node of the same
installed ``rabbitmq-server`` on free ports, with every file (database, logs,
pid file, Erlang cookie, config, enabled plugins) under a temporary directory,
and stops it afterwards.  Nothing of the system node is read or changed: not
``/etc/rabbitmq/rabbitmq-env.conf`` (its ``NODENAME``), not its
``enabled_plugins`` (so no management listener competes for 15672/15692), not
its cookie.  The one thing shared is epmd (port 4369), where the node
registers its name like any ``rabbitmqctl`` call does.

Debian's ``/usr/sbin/rabbitmq-server`` and ``rabbitmqctl`` are wrappers that
``su`` to the ``rabbitmq`` user (and its home, cookie and env file) when run as
root; this module calls the real scripts in ``/usr/lib/rabbitmq/bin`` instead,
so the node runs as the current user (root in CI) with its files in the tmp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The CLI's own Erlang distribution ports (rabbitmq-defaults): the node's must not collide.
_CTL_PORTS = range(35672, 35683)
START_TIMEOUT_S = 60.0


def _script(name: str) -> str | None:
    real = Path("/usr/lib/rabbitmq/bin") / name  # Debian/Ubuntu: skip the su wrapper
    if real.exists():
        return str(real)
    return shutil.which(name)


def _free_port(avoid: range = range(0)) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """If pytest is killed outright, the node gets SIGTERM (and stops cleanly)
    instead of running on with nobody to stop it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RabbitNode:
    """One private node: ``url`` for AMQP, ``name`` for ``rabbitmqctl -n``."""

    def __init__(self, base: Path) -> None:
        server, ctl = _script("rabbitmq-server"), _script("rabbitmqctl")
        if server is None or ctl is None:
            pytest.fail("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self.server, self.ctl_path = server, ctl
        self.base = base
        self.port = _free_port(_CTL_PORTS)
        self.dist_port = _free_port(_CTL_PORTS)
        self.name = f"bdtest{os.getpid()}x{secrets.token_hex(3)}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.start_s = 0.0
        self.popen: subprocess.Popen[bytes] | None = None
        home = base / "home"
        for d in (home, base / "mnesia", base / "log"):
            d.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"  # own cookie: ours alone can talk to the node
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        (base / "enabled_plugins").write_text("[].\n")  # no management, no prometheus
        (base / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq's
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",  # only used if no epmd runs yet
        }
        for var in ("RABBITMQ_NODENAME_FILE", "RABBITMQ_CONFIG_FILES",
                    "RABBITMQ_ADVANCED_CONFIG_FILE", "RABBITMQ_SERVER_START_ARGS"):
            self.env.pop(var, None)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> RabbitNode:
        started = time.monotonic()
        with (self.base / "server.out").open("ab") as out:
            self.popen = subprocess.Popen(
                [self.server], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.base, start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads yet at this point
            )
        deadline = started + START_TIMEOUT_S
        pid_file = self.base / "rabbitmq.pid"
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"private RabbitMQ node exited {self.popen.returncode}:\n"
                                   f"{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"private RabbitMQ node not up in {START_TIMEOUT_S}s:\n"
                                   f"{self.output()}")
            # await_startup fails at once until the node has registered with
            # epmd, about when it writes its pid file: a CLI call costs ~0.6 s
            # of CPU, so wait for the file first.
            if not pid_file.exists():
                time.sleep(0.05)
                continue
            done = self.ctl_sync("await_startup", "--timeout", "10", check=False, timeout=15)
            if done.returncode == 0:
                break
            time.sleep(0.2)
        self.start_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ctl_sync("stop", check=False, timeout=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(15)
        # Whatever is left of the node's process group (the VM, its port
        # programs): ours, started in a session of its own.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    # -- rabbitmqctl ------------------------------------------------------------

    def ctl_sync(self, *args: str, check: bool = True, timeout: float = 30
                 ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.ctl_path, "-n", self.name, *args], env=self.env, capture_output=True,
            text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    async def ctl(self, *args: str, timeout: float = 30) -> str:
        """``rabbitmqctl -n <node> args...`` without blocking the event loop."""
        proc = await asyncio.create_subprocess_exec(
            self.ctl_path, "-n", self.name, *args, env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"rabbitmqctl {' '.join(args)} hung for {timeout}s") from None
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{text}")
        return text

    async def eval(self, expression: str) -> str:
        return await self.ctl("eval", expression)

    def output(self) -> str:
        """The node's console output and the tail of its log."""
        parts = []
        for f in [self.base / "server.out", *sorted((self.base / "log").glob("*.log"))]:
            if f.exists():
                parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


@pytest.fixture(scope="module", name="rabbit_node")
def rabbit_node_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A private single RabbitMQ node for this module's tests (started once,
    about 4 s on the 2-core CI machine), stopped at the end."""
    node = RabbitNode(tmp_path_factory.mktemp("rabbit"))
    try:
        node.start()
        print(f"\nprivate RabbitMQ node {node.name} on {node.url} up in {node.start_s:.1f}s",
              flush=True)
        yield node
    finally:
        node.stop()
