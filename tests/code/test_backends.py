"""Where the services' databases are configured: SQLite under the home by default, PostgreSQL by URL."""

from __future__ import annotations

import pytest

from sluice.home import BackendError, Home
from sluice.labelstudio_server import LabelStudioSettings, server_env
from sluice.services import database_env


def test_sqlite_under_the_home_is_the_default(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLUICE_PREFECT_DATABASE_URL", "SLUICE_MLFLOW_DATABASE_URL", "SLUICE_LABELSTUDIO_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DJANGO_DB", "default")  # a stray setting in the shell does not move Label Studio
    assert home.mlflow_tracking_uri == f"sqlite:///{home.mlflow / 'mlflow.db'}"
    assert database_env(home, "prefect", "PREFECT_SERVER_DATABASE_CONNECTION_URL", driver="asyncpg") == {}
    env = server_env(LabelStudioSettings(), home, port=8080, data_dir=home.labelstudio / "data")
    assert env["DJANGO_DB"] == "sqlite"


def test_one_url_per_service_names_its_password(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_DB_PASSWORD", "s3cret:/@")
    monkeypatch.setenv(
        "SLUICE_PREFECT_DATABASE_URL", "postgresql://sluice:${TEAM_DB_PASSWORD}@db.internal:6543/prefect"
    )
    monkeypatch.setenv("SLUICE_MLFLOW_DATABASE_URL", "postgresql://sluice:${TEAM_DB_PASSWORD}@db.internal/mlflow")
    monkeypatch.setenv("SLUICE_LABELSTUDIO_DATABASE_URL", "postgresql://ls:${TEAM_DB_PASSWORD}@db.internal/labels")

    # MLflow's URI stays a template wherever sluice records it; the password is filled in on connecting.
    assert home.mlflow_tracking_uri == "postgresql://sluice:${TEAM_DB_PASSWORD}@db.internal/mlflow"
    assert database_env(home, "prefect", "PREFECT_SERVER_DATABASE_CONNECTION_URL", driver="asyncpg") == {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://sluice:s3cret%3A%2F%40@db.internal:6543/prefect"
    }
    env = server_env(LabelStudioSettings(), home, port=8080, data_dir=home.labelstudio / "data")
    assert {k: env[k] for k in env if k == "DJANGO_DB" or k.startswith("POSTGRE_")} == {
        "DJANGO_DB": "default",
        "POSTGRE_NAME": "labels",
        "POSTGRE_USER": "ls",
        "POSTGRE_PASSWORD": "s3cret:/@",
        "POSTGRE_HOST": "db.internal",
        "POSTGRE_PORT": "5432",
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://sluice:hunter2@db/mlflow", r"\$SLUICE_MLFLOW_DATABASE_URL holds a password"),
        ("mysql://sluice@db/mlflow", r"\$SLUICE_MLFLOW_DATABASE_URL must be a PostgreSQL URL"),
    ],
)
def test_a_database_url_that_cannot_work_is_refused(
    home: Home, monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("SLUICE_MLFLOW_DATABASE_URL", url)
    with pytest.raises(BackendError, match=message):
        home.database_url("mlflow")


def test_the_cli_names_an_unset_password_variable_before_starting_anything(
    home: Home, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sluice.cli import EXIT_BAD_INPUT, main

    monkeypatch.delenv("TEAM_DB_PASSWORD", raising=False)
    monkeypatch.setenv("SLUICE_PREFECT_DATABASE_URL", "postgresql://sluice:${TEAM_DB_PASSWORD}@db/prefect")
    assert main(["--home", str(home.root), "stop"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.lstrip()
    assert err.startswith("sluice: $SLUICE_PREFECT_DATABASE_URL refers to ${TEAM_DB_PASSWORD}, which is not set")
    assert "Traceback" not in err
