"""A PostgreSQL table as a source, read directly (no pipeline): server types, batches, and a refused login."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks.sql_source import SqlSourceConfig, SqlSourceError, ingest_sql
from tests.fixtures.postgres import PostgresServer

PASSWORD_VAR = "SLUICE_TEST_WAREHOUSE_PASSWORD"


@pytest.fixture(scope="module")
def orders(postgres: PostgresServer) -> str:
    """A database `shop` with a table `orders`: typed columns and one timestamp Python cannot hold."""
    url = postgres.create_database("shop").replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE orders (id bigint PRIMARY KEY, note text, amount numeric(10, 2), paid boolean, "
                "placed_at timestamptz)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO orders SELECT i, 'order ' || i, i * 1.25, i % 2 = 0, "
                "TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 hour' FROM generate_series(1, 25) AS i"
            )
        )
        connection.execute(sa.text("UPDATE orders SET placed_at = 'infinity' WHERE id = 7"))
    engine.dispose()
    return "shop"


def test_a_table_is_read_in_batches_with_its_types_and_an_unreadable_value_quarantined(
    postgres: PostgresServer, orders: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, postgres.password)
    config = SqlSourceConfig(
        url=postgres.url(orders, password_var=PASSWORD_VAR), table="orders", watermark="id", batch_rows=4
    )
    snapshot = ingest_sql(config, snapshot_root=tmp_path / "snapshots")
    assert (snapshot.rows, snapshot.quarantined) == (24, 1)
    data = snapshot.load().set_index("id")
    assert data.loc[2, "amount"] == 2.5 and bool(data.loc[2, "paid"]) is True
    assert str(data["placed_at"].dtype) == "datetime64[us, UTC]"
    quarantine = snapshot.load_quarantine()
    assert 'column "placed_at"' in quarantine["reason"][0] and "'infinity'" in quarantine["reason"][0]
    assert postgres.password not in (snapshot.directory / "manifest.json").read_text()


def test_a_refused_login_names_the_source_and_never_the_password(
    postgres: PostgresServer, orders: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, "not-the-password")
    config = SqlSourceConfig(url=postgres.url(orders, password_var=PASSWORD_VAR), table="orders")
    with pytest.raises(SqlSourceError, match=r"cannot read table orders at postgresql://sluice:\*\*\*@") as caught:
        ingest_sql(config, snapshot_root=tmp_path / "snapshots")
    assert "password authentication failed" in str(caught.value)
    assert "not-the-password" not in str(caught.value) and postgres.password not in str(caught.value)
