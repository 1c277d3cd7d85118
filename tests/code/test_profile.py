"""`sluice init`: profiling, the drafted config and suites, and the command's messages on bad arguments."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sluice.cli import EXIT_BAD_INPUT, main
from sluice.config import load_config
from tasks.ingest import SourceConfig
from tasks.label_config import load_label_config
from tasks.profile import (
    DataProfile,
    ProfileError,
    Roles,
    draft_pipeline,
    read_data,
    source_path_for,
    split_strategy,
    task_design,
    write_draft,
)


def _reviews(rows: int = 60) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "review": [f"review number {i} says {'good' if i % 3 else 'bad'} things" for i in range(rows)],
            "stars": [i % 5 + 1 for i in range(rows)],
            "price": [2.5 + i for i in range(rows)],
            "shop": [f"shop{i % 4}" for i in range(rows)],
            "sentiment": ["pos" if i % 3 else "neg" for i in range(rows)],
            "note": [None if i % 2 else "x" for i in range(rows)],
        }
    )


def _profiled(tmp_path: Path, frame: pd.DataFrame, name: str = "reviews.csv") -> DataProfile:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return read_data(str(path), base_dir=tmp_path, source=SourceConfig(path=str(path)))


def _by_type(suite: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {e["kwargs"].get("column", "table"): e for e in suite["expectations"] if e["type"] == kind}


@pytest.mark.parametrize(
    ("roles", "design", "strategy"),
    [
        (Roles(label="y", text="t"), ("text", "hashed_bag"), "stratified"),
        (Roles(label="y", features=("a",), group="g"), ("tabular", "mlp"), "group"),
        (Roles(label="y", image="img", time="day"), ("image", "cnn"), "temporal"),
        (Roles(label="y", text="t", group="g", time="day"), ("text", "hashed_bag"), "temporal"),
    ],
)
def test_defaults_follow_the_column_roles(roles: Roles, design: tuple[str, str], strategy: str) -> None:
    assert task_design(roles) == design
    assert split_strategy(roles) == strategy


def test_draft_config_runs_through_the_config_loader(tmp_path: Path) -> None:
    data = _profiled(tmp_path, _reviews())
    draft = draft_pipeline(
        data, Roles(label="sentiment", text="review", group="shop"), name="shop_reviews", source_path="reviews.csv"
    )
    written = write_draft(draft, tmp_path)
    config = load_config(tmp_path / "configs" / "shop_reviews.yaml")

    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "configs/shop_reviews.yaml",
        "expectations/shop_reviews_raw.json",
        "expectations/shop_reviews_clean.json",
    ]
    assert config.labels.classes == ["neg", "pos"] and config.labels.column == "sentiment"
    assert (config.train.task, config.train.architecture) == ("text", "hashed_bag")
    assert (config.split.strategy, config.columns.group) == ("group", "shop")
    assert config.clean.dedupe_on == ["review"] and config.clean.normalize_text == ["review"]
    assert config.registry.model_name == "shop-reviews"
    assert config.registry.promotion.floors == {"accuracy": 0.66}  # always answering "pos": 40/60
    # Suites resolve against the folder holding configs/, not the configs/ folder itself.
    assert (
        config.resolve_path(config.expectations.clean_suite or "") == tmp_path / "expectations/shop_reviews_clean.json"
    )
    assert config.resolve_path(config.source.path) == tmp_path / "reviews.csv"
    header = (tmp_path / "configs" / "shop_reviews.yaml").read_text().splitlines()[0]
    assert header.startswith("# Drafted by `sluice init` from reviews.csv: 60 rows, 6 columns")


def test_suites_hold_what_the_data_showed(tmp_path: Path) -> None:
    data = _profiled(tmp_path, _reviews())
    draft = draft_pipeline(data, Roles(label="sentiment", text="review"), name="r", source_path="reviews.csv")
    raw, clean = draft.raw_suite, draft.clean_suite

    assert set(_by_type(raw, "expect_column_to_exist")) == {"review", "stars", "price", "shop", "sentiment", "note"}
    assert "note" not in _by_type(raw, "expect_column_values_to_not_be_null")  # it has nulls
    assert set(_by_type(clean, "expect_column_values_to_not_be_null")) == {"review", "stars", "price", "shop"}
    sets = {c: e["kwargs"]["value_set"] for c, e in _by_type(clean, "expect_column_values_to_be_in_set").items()}
    assert sets == {
        "stars": [1, 2, 3, 4, 5],
        "shop": ["shop0", "shop1", "shop2", "shop3"],
        "sentiment": ["neg", "pos"],
        "note": ["x"],  # nulls are no reason to leave out the set: GX checks the values present
    }
    price = _by_type(clean, "expect_column_values_to_be_between")["price"]["kwargs"]
    assert price["min_value"] == 0.0  # 2.5 - 10% of the 59 span would go negative: never-negative data stays so
    assert price["max_value"] == pytest.approx(61.5 + 5.9)
    lengths = _by_type(clean, "expect_column_value_lengths_to_be_between")["review"]["kwargs"]
    assert lengths["min_value"] <= 30 and lengths["max_value"] >= 34
    assert {"item_id", "review"} <= set(_by_type(clean, "expect_column_values_to_be_unique"))
    # Everything but the row count and the ids quarantines its rows instead of stopping the run.
    hard = [e["type"] for e in clean["expectations"] if not e.get("meta", {}).get("row_level")]
    assert sorted(hard) == sorted(["expect_table_row_count_to_be_between"] + ["expect_column_values_to_be_unique"] * 2)


def test_tabular_features_are_the_numeric_and_low_cardinality_columns(tmp_path: Path) -> None:
    data = _profiled(tmp_path, _reviews())
    draft = draft_pipeline(data, Roles(label="sentiment", group="shop"), name="tab", source_path="reviews.csv")
    assert draft.config["columns"]["features"] == ["stars", "price", "note"]
    assert draft.config["train"]["task"] == "tabular"


def test_annotation_writes_a_label_config_for_the_classes_found(tmp_path: Path) -> None:
    data = _profiled(tmp_path, _reviews())
    draft = draft_pipeline(
        data, Roles(label="sentiment", text="review", labels_from="annotation"), name="ann", source_path="reviews.csv"
    )
    write_draft(draft, tmp_path)
    config = load_config(tmp_path / "configs" / "ann.yaml")
    assert config.labels.source == "annotation" and config.annotation is not None
    assert config.annotation.project_identifier == "ann" and not config.annotation.simulate
    checked = load_label_config(config.resolve_path(config.annotation.label_config), config.labels.classes)
    assert checked.classes == ("neg", "pos") and checked.data_key == "text" and checked.object_type == "Text"


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    data = _profiled(tmp_path, _reviews())
    draft = draft_pipeline(data, Roles(label="sentiment", text="review"), name="r", source_path="reviews.csv")
    write_draft(draft, tmp_path)
    clean_suite = tmp_path / "expectations" / "r_clean.json"
    clean_suite.write_text("hand-tuned")
    (tmp_path / "configs" / "r.yaml").unlink()
    with pytest.raises(ProfileError, match=r"expectations/r_raw.json and expectations/r_clean.json already exist"):
        write_draft(draft, tmp_path)
    assert clean_suite.read_text() == "hand-tuned" and not (tmp_path / "configs" / "r.yaml").exists()
    write_draft(draft, tmp_path, force=True)
    assert json.loads(clean_suite.read_text())["name"] == "r_clean"


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (Roles(label="stars_"), r'column "stars_" \(--label\) is not in reviews.csv; available columns: review, stars'),
        (Roles(label="sentiment", text="body"), r'column "body" \(--text\) is not in reviews.csv.*Pass one of them'),
        (Roles(label="sentiment", features=("stars", "nope")), r'column "nope" \(--features nope\)'),
        (Roles(label="review"), r'column "review" \(--label\) has 60 distinct values'),
        (Roles(label="sentiment", time="shop"), r'column "shop" \(--time\) holds text, not dates'),
        (Roles(label="sentiment", labels_from="annotation"), r"--labels-from annotation needs --text"),
        (Roles(label="sentiment", text="review", features=("stars",)), r"--features is for tabular data"),
        (Roles(label="sentiment", features=("stars", "sentiment")), r"--features names sentiment, which --label"),
    ],
)
def test_bad_roles_name_the_column_and_the_fix(tmp_path: Path, roles: Roles, message: str) -> None:
    data = _profiled(tmp_path, _reviews())
    with pytest.raises(ProfileError, match=message):
        draft_pipeline(data, roles, name="r", source_path="reviews.csv")


def test_a_source_item_id_column_is_the_id(tmp_path: Path) -> None:
    data = _profiled(tmp_path, _reviews().assign(item_id=[f"r{i}" for i in range(60)]))
    draft = draft_pipeline(data, Roles(label="sentiment", group="shop"), name="r", source_path="reviews.csv")
    assert draft.config["source"]["id_column"] == "item_id"
    assert "item_id" not in draft.config["columns"]["features"]
    uniques = [e for e in draft.clean_suite["expectations"] if e["type"] == "expect_column_values_to_be_unique"]
    assert [e["kwargs"]["column"] for e in uniques] == ["item_id"]
    with pytest.raises(ProfileError, match=r'has a column "item_id", which is sluice\'s id column, but --id is "shop"'):
        draft_pipeline(data, Roles(label="sentiment", text="review", id="shop"), name="r", source_path="reviews.csv")


def test_reserved_column_names_are_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(
        ProfileError, match=r'reviews.csv has column "sluice_label".*rename it in the file \(e.g. "label"\)'
    ):
        _profiled(tmp_path, _reviews().rename(columns={"sentiment": "sluice_label"}))


def test_nothing_to_learn_from_is_named(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "y": ["a", "b"] * 10})
    data = _profiled(tmp_path, frame)
    with pytest.raises(ProfileError, match=r"nothing to learn from in reviews.csv.*--text COL"):
        draft_pipeline(data, Roles(label="y"), name="r", source_path="reviews.csv")


def test_source_path_is_relative_to_the_home_or_the_root(tmp_path: Path) -> None:
    home, root = tmp_path / "proj" / ".sluice", tmp_path / "proj"
    assert source_path_for(str(home / "raw/a/a.csv"), root=root, home=home) == "{home}/raw/a/a.csv"
    assert source_path_for(str(root / "data" / "*.csv"), root=root, home=home) == "data/*.csv"
    assert source_path_for(str(tmp_path / "elsewhere.csv"), root=root, home=home) == str(tmp_path / "elsewhere.csv")


# --- the command --------------------------------------------------------------------------------------------
def _init(tmp_path: Path, *args: str) -> int:
    return main(["--home", str(tmp_path / ".sluice"), "init", *args, "--root", str(tmp_path)])


def test_init_prints_what_it_inferred_and_the_next_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _reviews().to_json(tmp_path / "reviews.jsonl", orient="records", lines=True)
    assert _init(tmp_path, "reviews.jsonl", "--name", "rev", "--label", "sentiment", "--text", "review") == 0
    out = capsys.readouterr().out
    assert "sluice: profiled reviews.jsonl: 60 rows, 6 columns" in out
    assert "classes neg (20), pos (40)" in out and "task text, architecture hashed_bag" in out
    assert "sluice run --config configs/rev.yaml" in out
    assert load_config(tmp_path / "configs" / "rev.yaml").source.path == "reviews.jsonl"

    assert _init(tmp_path, "reviews.jsonl", "--name", "rev", "--label", "sentiment", "--text", "review") == 1
    err = capsys.readouterr().err
    assert "configs/rev.yaml" in err and "pass --force to overwrite" in err


@pytest.mark.parametrize(
    ("make", "args", "expected"),
    [
        (None, ["missing.csv"], "no file matches 'missing.csv'"),
        (lambda p: p.write_bytes(b""), ["empty.csv"], "empty.csv is empty (0 bytes)"),
        (lambda p: p.write_text("a,b\n"), ["header.csv"], "header.csv has no data rows"),
        (lambda p: p.write_bytes(b"a,b\n\xe9t\xe9,1\n"), ["latin.csv"], "latin.csv is not valid utf-8"),
        (lambda p: p.write_text("a,b\n1,2\n"), ["cols.csv", "--label", "c"], 'column "c" (--label) is not in cols.csv'),
        (lambda p: p.write_text("a,b\n1,2\n"), ["cols.csv", "--name", "Bad Name"], "--name 'Bad Name' must be"),
        (lambda p: p.write_text("a,b\n1,2\n"), ["cols.csv", "other.csv"], "the shell expanded a glob"),
    ],
)
def test_bad_arguments_end_with_one_clear_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[Path], object] | None,
    args: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if make is not None:
        make(tmp_path / args[0])
    defaults = {"--name": "x", "--label": "b"}
    flags = [item for key, value in defaults.items() if key not in args for item in (key, value)]
    assert _init(tmp_path, *args, *flags) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "configs").exists()
