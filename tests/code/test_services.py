"""Local services: a server started on a port another program won is never adopted as the project's own."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice import services
from sluice.home import Home
from sluice.services import LOOPBACK, PortTakenError, http_ok, start_on_a_free_port, start_service, stop_service


def _web(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", LOOPBACK]


@pytest.fixture
def other_program(tmp_path: Path) -> Iterator[int]:
    """A web server that is not ours, on a port the OS picked."""
    port = services.free_port()
    process = subprocess.Popen(_web(port), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not http_ok(f"http://{LOOPBACK}:{port}/") and time.monotonic() < deadline:
        time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(10)


def test_an_answer_from_another_program_is_not_taken_for_the_service(tmp_path: Path, other_program: int) -> None:
    home = Home.resolve(tmp_path / "home")
    url = f"http://{LOOPBACK}:{other_program}"
    # The loser of a race for a free port: its own server cannot bind, the winner's answers the health check.
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(PortTakenError, match=f"port {other_program}"):
        start_service(home, "web", sleeper, url=url, health_url=f"{url}/", port=other_program)
    assert not (home.root / "services" / "web.json").exists()


def test_a_lost_race_starts_again_on_another_port(
    tmp_path: Path, other_program: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home.resolve(tmp_path / "home")
    real = services.free_port
    picks = iter([other_program])  # the first probe says free, as it did before the other program bound
    monkeypatch.setattr(services, "free_port", lambda preferred=None: next(picks, None) or real())
    service = start_on_a_free_port(home, "web", _web, preferred=other_program, health_path="/", timeout=30)
    try:
        assert service.url != f"http://{LOOPBACK}:{other_program}"
        assert services.read_service(home, "web") == service
        assert services._listens(service.pid, int(service.url.rsplit(":", 1)[1]))
    finally:
        assert stop_service(home, "web")
