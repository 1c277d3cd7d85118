"""A team's setup on one PostgreSQL: Prefect's server, MLflow and Label Studio on it, and a table as the source.

`sluice` runs as a user runs it (subprocesses, its own background services), twice: rows are appended to
the table in between, so the second run ingests only those into a second snapshot of the chain and trains
on both. The database password reaches sluice only through the environment (`${VAR}` in the service URLs)
and a Prefect Secret block (the source's), and must appear in no file, log, artifact, param or tag.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.demo_data import rotten_tomatoes_frame
from tests.fixtures.labelstudio import SKIP_ENV_VAR as SKIP_LABELSTUDIO
from tests.fixtures.postgres import PostgresServer
from tests.flow.test_secrets import _files_containing, _mlflow_records_containing, _prefect_records_containing

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]

SLUICE = str(Path(sys.executable).with_name("sluice"))
REPO = Path(__file__).resolve().parents[2]
PASSWORD_VAR = "SLUICE_TEST_DB_PASSWORD"
SOURCE_SECRET = "sluice-test-warehouse-password"
FIRST, LATER = 180, 30


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def _append_reviews(url: str, frame: pd.DataFrame) -> None:
    with _engine(url).begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE IF NOT EXISTS reviews (id serial PRIMARY KEY, text text, category text, "
                "movie_name text, filename text, reviewed_at timestamp)"
            )
        )
        rows = frame.to_dict(orient="records")
        connection.execute(
            sa.text(
                "INSERT INTO reviews (text, category, movie_name, filename, reviewed_at) "
                "VALUES (:text, :category, :movie_name, :filename, CAST(:reviewed_at AS timestamp))"
            ),
            rows,
        )


def _query(url: str, sql: str) -> list[Any]:
    with _engine(url).connect() as connection:
        return [row[0] for row in connection.execute(sa.text(sql))]


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SLUICE, *args], input=stdin, capture_output=True, text=True, env=env, timeout=1500)


def _snapshot_of(stdout: str) -> str:
    found = re.search(r"snapshot ([0-9a-f]{16})", stdout)
    assert found, stdout
    return found.group(1)


def test_services_on_postgresql_and_a_table_ingested_run_by_run(
    postgres: PostgresServer, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    if os.environ.get(SKIP_LABELSTUDIO) == "1":
        pytest.skip(f"{SKIP_LABELSTUDIO}=1: Label Studio tests skipped on request")
    urls = {name: postgres.create_database(name) for name in ("prefect", "mlflow", "labelstudio", "warehouse")}
    reviews = rotten_tomatoes_frame().sample(FIRST + LATER, random_state=0).assign(reviewed_at="2026-11-30 12:00:00")
    _append_reviews(urls["warehouse"], reviews.head(FIRST))

    home = tmp_path / "sluice-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SLUICE_"))}
    env |= {
        "SLUICE_HOME": str(home),
        PASSWORD_VAR: postgres.password,
        **{
            f"SLUICE_{name.upper()}_DATABASE_URL": postgres.url(name, password_var=PASSWORD_VAR)
            for name in ("prefect", "mlflow", "labelstudio")
        },
    }
    config = make_config(
        "rotten_tomatoes",
        demo=None,
        source={
            "sql": {
                "url": f"postgresql://{postgres.user}@{postgres.host}:{postgres.port}/warehouse",
                "table": "reviews",
                "watermark": "id",
                "password_secret": SOURCE_SECRET,
                "batch_rows": 100,
            }
        },
        annotation__label_config=str(REPO / "label_config" / "text_classification.xml"),
        annotation__project_identifier="postgres-team",
        annotation__gold=None,  # the gold items' check has its own tests; here only the backends matter
        annotation__simulator={"annotators": {"alice": 0.02, "bruno": 0.04, "chidi": 0.08}, "seed": 3},
        labelstudio__start_timeout_s=1200,  # the first start migrates a new database (4 min 45 s on 2 busy cores)
        train__epochs=2,
        registry__model_name="rt-postgres",
        registry__promotion={"floors": {}, "first_run": "promote"},
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    outputs: list[str] = []
    try:
        stored = _run(["secret", "set", SOURCE_SECRET], env, stdin=postgres.password + "\n")
        assert stored.returncode == 0, stored.stderr[-3000:]
        first = _run(["run", "--config", str(config)], env)
        outputs += [stored.stdout, stored.stderr, first.stdout, first.stderr]
        assert first.returncode == 0, first.stderr[-3000:]
        assert f"rows        {FIRST} in →" in first.stdout and "model       rt-postgres version 1" in first.stdout

        # A bad row arrives with the new ones: a timestamp past year 9999, which Python cannot hold.
        later = reviews.tail(LATER).reset_index(drop=True)
        later.loc[0, "reviewed_at"] = "20225-01-01 10:00:00"
        _append_reviews(urls["warehouse"], later)
        second = _run(["run", "--config", str(config)], env)
        outputs += [second.stdout, second.stderr]
        assert second.returncode == 0, second.stderr[-3000:]
        assert f"rows        {FIRST + LATER} in →" in second.stdout
        assert "model       rt-postgres version 2" in second.stdout
        prefect_url = json.loads((home / "services" / "prefect.json").read_text())["url"]
        with temporary_settings(updates={PREFECT_API_URL: f"{prefect_url}/api"}):
            prefect_leaks = _prefect_records_containing(postgres.password)
    finally:
        _run(["stop"], env)

    # --- the chain: the second snapshot holds only the new rows, the pipeline trained on both ---------------
    head, tail = _snapshot_of(first.stdout), _snapshot_of(second.stdout)
    manifest = json.loads((home / "snapshots" / tail / "manifest.json").read_text())
    assert manifest["previous"] == head and manifest["parts"] == [head, tail]
    assert manifest["increment"] == {"rows": LATER - 1, "quarantined": 1, "superseded": 0}
    assert manifest["watermark"]["low"] == {"type": "int", "value": FIRST}
    assert manifest["watermark"]["high"] == {"type": "int", "value": FIRST + LATER}
    assert len(pd.read_parquet(home / "snapshots" / tail / "data.parquet")) == LATER - 1
    quarantine = pd.read_parquet(home / "quarantine" / f"{tail}.parquet")
    bad = quarantine[quarantine["step"] == "ingest"]
    assert len(bad) == 1 and "'20225-01-01 10:00:00'" in bad["reason"].iloc[0]
    first_ids = set(pd.read_parquet(home / "snapshots" / head / "data.parquet")["item_id"])
    split_ids = {frozenset(pd.read_parquet(p)["item_id"]) for p in (home / "splits").glob("*.parquet")}
    newest = max(split_ids, key=len)
    assert first_ids & newest and newest - first_ids, "the second model was not trained on both snapshots"

    # --- each service kept its state in PostgreSQL, none in SQLite under the home ---------------------------
    runs = "SELECT count(*) FROM flow_run r JOIN flow f ON r.flow_id = f.id WHERE f.name = 'sluice-pipeline'"
    assert _query(urls["prefect"], f"{runs} AND r.state_type = 'COMPLETED'") == [2]
    assert _query(urls["mlflow"], "SELECT version FROM model_versions WHERE name = 'rt-postgres' ORDER BY 1") == [1, 2]
    assert "Rotten Tomatoes: fresh or rotten?" in _query(urls["labelstudio"], "SELECT title FROM project")
    assert not (home / "prefect" / "prefect.db").exists() and not (home / "mlflow" / "mlflow.db").exists()
    assert not list(home.rglob("label_studio.sqlite3"))

    # --- the password: in no file, log, artifact, param or tag ------------------------------------------------
    needle = postgres.password
    assert not [o for o in outputs if needle in o]
    assert _files_containing(needle, [tmp_path]) == []
    assert prefect_leaks == []
    assert _mlflow_records_containing(needle, urls["mlflow"].replace("postgresql://", "postgresql+psycopg://")) == []
