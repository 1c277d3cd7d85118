from __future__ import annotations

from pathlib import Path

import pytest

from sluice.cli import EXIT_BAD_INPUT, format_summary, main


def test_missing_config_fails_fast_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--home", str(tmp_path / "home"), "run", "--config", str(tmp_path / "nope.yaml")])
    assert code == EXIT_BAD_INPUT
    assert "nope.yaml does not exist" in capsys.readouterr().err
    assert not (tmp_path / "home" / "services").exists()  # no server was started for a broken config


def test_bad_field_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: x\nsource: {path: a.csv}\nlabels: {source: column, column: y, classes: [a]}\nregistry: {model_name: m}\n"
    )
    assert main(["--home", str(tmp_path / "home"), "run", "--config", str(config)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "labels.classes" in err and "c.yaml is not a valid pipeline config" in err


def test_summary_says_what_a_user_needs() -> None:
    result = {
        "config": "configs/rt.yaml",
        "snapshot_id": "abc",
        "quarantine_path": "/q.parquet",
        "rows": {"rows_in": 10, "trainable": 7, "awaiting": 1, "quarantined_total": 2, "quarantined": {"dedupe": 2}},
        "expectations": [{"suite": "clean", "success": True, "passed": ["e1", "e2"], "failed": [], "data_docs": "d"}],
        "split_sizes": {"train": 5, "val": 1, "test": 1},
        "split_manifest_hash": "f" * 64,
        "test_metrics": {"accuracy": 0.8, "f1_macro": 0.75},
        "model_name": "m",
        "model_version": "3",
        "run_id": "r" * 32,
        "device": "cpu",
        "aliases": ["challenger"],
        "promotion": "kept as challenger: …",
        "tracking_uri": "sqlite:///x.db",
        "run_dir": "/runs/x",
        "flow_run_id": "fr",
    }
    text = format_summary(result, prefect_url="http://127.0.0.1:4200")
    for expected in (
        "10 in → 7 kept for training, 1 awaiting labels, 2 quarantined (dedupe 2)",
        "clean: passed, 2/2",
        "train 5, val 1, test 1",
        "accuracy 0.800",
        "m version 3",
        "http://127.0.0.1:4200/runs/flow-run/fr",
        "aliases: challenger",
    ):
        assert expected in text


def test_configuring_tracking_leaves_the_users_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.tracking import configure_tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///users-choice.db")
    configure_tracking(f"sqlite:///{tmp_path / 'this-run.db'}")
    import os

    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///users-choice.db"


def test_other_commands_end_bad_input_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--home", str(tmp_path / "home"), "register", str(tmp_path / "no-such-run")])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"sluice: {tmp_path / 'no-such-run' / 'pending'} holds no pending registration "
        "(pending_registration.json is missing)."
    ]


def test_a_bug_is_called_a_bug_with_the_traceback_in_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice import cli

    def broken(home: object) -> int:
        return {"a": 1}["b"]

    monkeypatch.setattr(cli, "_stop", broken)
    assert main(["--home", str(tmp_path / "home"), "stop"]) == 4
    err = capsys.readouterr().err
    assert "sluice: internal error: KeyError: 'b'" in err and "bug in sluice" in err and "Traceback" not in err
    (log,) = (tmp_path / "home" / "logs").glob("stop-*.log")
    assert f"full log: {log}" in err
    assert "Traceback (most recent call last)" in log.read_text() and "KeyError: 'b'" in log.read_text()


def test_a_model_kept_while_mlflow_was_down_gets_its_register_command(tmp_path: Path) -> None:
    from sluice.cli import _register_later
    from sluice.config import load_config
    from sluice.home import Home

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "rotten_tomatoes_labelled.yaml")
    home = Home(tmp_path / "home")
    assert _register_later(home, config, "run-1") == ()
    pending = home.runs / config.name / "run-1" / "pending"
    pending.mkdir(parents=True)
    (pending / "pending_registration.json").write_text("{}")
    (hint,) = _register_later(home, config, "run-1")
    assert f"`sluice register {home.runs / config.name / 'run-1'}`" in hint
