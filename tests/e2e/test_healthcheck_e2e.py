"""`birthdayd healthcheck --pid P` against a real `birthdayd fake-email` process:
healthy while it serves, unhealthy while it is wedged (SIGSTOP: the port still
accepts, nothing answers), healthy again once it resumes."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.e2e.conftest import BIRTHDAYD, Proc, free_port


def _healthcheck(pid: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIRTHDAYD, "healthcheck", "--pid", str(pid), "--timeout", "1"],
                          capture_output=True, text=True, timeout=30, check=False)


async def test_healthcheck_follows_a_fake_email_process_on_its_own_port(tmp_path: Path) -> None:
    port = free_port()
    fake = Proc("fake-email", ["fake-email", "--port", str(port)], {}, tmp_path / "fake.log",
                port).start()
    try:
        await fake.wait_http("/health")
        assert fake.popen is not None
        pid = fake.popen.pid
        healthy = _healthcheck(pid)
        assert healthy.returncode == 0, healthy.stderr
        assert f"http://127.0.0.1:{port}/health: 200" in healthy.stdout

        fake.signal(signal.SIGSTOP)
        try:
            wedged = _healthcheck(pid)
        finally:
            fake.signal(signal.SIGCONT)
        assert wedged.returncode == 1
        assert "timed out" in wedged.stderr

        assert _healthcheck(pid).returncode == 0
    finally:
        fake.stop_now()
