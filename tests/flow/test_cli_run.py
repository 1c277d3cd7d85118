"""`sluice run` as a user runs it: a subprocess, its own Prefect server, exit codes, nothing written to $HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.demo_data import rotten_tomatoes_frame

SLUICE = str(Path(sys.executable).with_name("sluice"))


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_cli_run_prints_the_summary_gates_exit_2_and_home_stays_clean(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    # A user's shell: no Prefect or MLflow settings, no XDG folders; only HOME and the project home.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "XDG_", "SLUICE_"))}
    env |= {"HOME": str(user_home), "SLUICE_HOME": str(tmp_path / "sluice-home")}

    config = make_config(
        demo__rows=600,
        train__epochs=2,
        registry__model_name="rt-cli",
        registry__promotion={"floors": {"accuracy": 0.0}},
    )
    corrupted = rotten_tomatoes_frame(400)
    corrupted.loc[corrupted.index[::7], "movie_name"] = None
    corrupted.to_csv(tmp_path / "corrupted.csv", index=False)
    gated = make_config(source__path=str(tmp_path / "corrupted.csv"), demo=None, registry__model_name="rt-cli-gate")
    try:
        done = _run(["run", "--config", str(config)], env)
        assert done.returncode == 0, done.stderr[-3000:]
        for expected in (
            "rows        600 in →",
            "expectations rotten_tomatoes_clean: passed",
            "split       train",
            "test        accuracy",
            "model       rt-cli version 1",
            "Prefect UI   http://127.0.0.1:",
        ):
            assert expected in done.stdout

        stopped = _run(["run", "--config", str(gated)], env)
        assert stopped.returncode == 2
        assert "a gate stopped the run: expectation suite rotten_tomatoes_clean" in stopped.stderr
        assert 'expect_column_values_to_not_be_null("movie_name")' in stopped.stderr
        assert "Traceback" not in stopped.stderr and "  full log: " in stopped.stderr  # the traceback is in the log
    finally:
        _run(["stop"], env)
    assert sorted(str(p.relative_to(user_home)) for p in user_home.rglob("*")) == []
