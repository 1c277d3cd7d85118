"""Search and cross-validation pick what trains best, report every trial, and fail fast on bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.train import TrainConfig
from tasks.tune import cross_validate, grid_search, optuna_search

CLASSES = ["no", "yes"]
FEATURES = ["x1", "x2", "x3"]


def make_rows(n: int, seed: int) -> pd.DataFrame:
    """Two informative features and one of noise; the label is a noisy linear rule."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=n)) > 0
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": np.where(y, "yes", "no")})


@pytest.fixture(scope="module")
def rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_rows(300, 0), make_rows(150, 1)


def base_config(**overrides: Any) -> TrainConfig:
    values: dict[str, Any] = dict(
        task="tabular",
        hidden=[16],
        epochs=4,
        batch_size=32,
        patience=4,
        progress=False,
        device="cpu",
        monitor="val_accuracy",
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_grid_search_prefers_the_learning_rate_that_learns(rows: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, val = rows
    seen: list[tuple[dict[str, Any], dict[str, float]]] = []
    result = grid_search(
        train,
        val,
        base=base_config(),
        grid={"lr": [1e-7, 1e-2], "dropout": [0.0, 0.1]},
        label_col="y",
        classes=CLASSES,
        feature_cols=FEATURES,
        on_trial=lambda params, metrics: seen.append((params, metrics)),
    )
    assert result.best_params["lr"] == 1e-2
    assert result.best_config.lr == 1e-2
    assert len(result.trials) == 4 and len(seen) == 4
    assert {"param_lr", "param_dropout", "val_accuracy", "val_loss", "best_epoch"} <= set(result.trials.columns)
    assert result.best_metric == pytest.approx(result.trials["val_accuracy"].max())
    assert result.best_metric > 0.8
    assert all("val_f1_macro" in metrics for _, metrics in seen)


def test_grid_search_validates_every_combination_before_training(
    rows: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, val = rows
    calls: list[dict[str, Any]] = []
    with pytest.raises(ValueError, match="adamw"):
        grid_search(
            train,
            val,
            base=base_config(),
            grid={"optimizer": ["adam", "adamax"]},
            label_col="y",
            classes=CLASSES,
            feature_cols=FEATURES,
            on_trial=lambda p, m: calls.append(p),
        )
    assert calls == []  # the bad value failed before the good one trained
    with pytest.raises(ValueError, match="not TrainConfig fields"):
        grid_search(
            train,
            val,
            base=base_config(),
            grid={"learning_rate": [0.1]},
            label_col="y",
            classes=CLASSES,
            feature_cols=FEATURES,
        )


def test_optuna_search_finds_a_good_region_and_records_trials(
    rows: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, val = rows
    space = {
        "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
        "hidden": {"type": "categorical", "choices": [[8], [16, 8]]},
    }
    result = optuna_search(
        train,
        val,
        base=base_config(),
        search_space=space,
        n_trials=3,
        label_col="y",
        classes=CLASSES,
        feature_cols=FEATURES,
        seed=0,
    )
    assert 1e-3 <= result.best_params["lr"] <= 3e-2
    assert result.best_params["hidden"] in ([8], [16, 8])
    assert result.best_config.hidden == result.best_params["hidden"]
    assert len(result.trials) == 3
    assert result.best_metric > 0.8


def test_median_pruner_stops_lagging_trials(rows: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, val = rows
    states: list[float] = []
    result = optuna_search(
        train,
        val,
        base=base_config(monitor="val_loss"),
        search_space={"lr": [1e-2, 1e-7]},
        n_trials=6,
        label_col="y",
        classes=CLASSES,
        feature_cols=FEATURES,
        seed=0,
        n_startup_trials=1,
        n_warmup_epochs=0,
        on_trial=lambda p, m: states.append(m["pruned"]),
    )
    assert result.best_params == {"lr": 1e-2}
    assert "pruned" in set(result.trials["state"])
    assert 1.0 in states and len(states) == 6


def test_optuna_search_rejects_an_unreadable_space(rows: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, val = rows
    with pytest.raises(ValueError, match="categorical"):
        optuna_search(
            train,
            val,
            base=base_config(),
            search_space={"lr": {"type": "gaussian"}},
            n_trials=1,
            label_col="y",
            classes=CLASSES,
            feature_cols=FEATURES,
        )


def test_cross_validate_scores_each_held_out_fold(rows: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df = pd.concat(rows, ignore_index=True)
    folds = pd.Series(np.arange(len(df)) % 3, index=df.index)
    seen: list[Any] = []
    result = cross_validate(
        df,
        folds,
        config=base_config(lr=1e-2),
        label_col="y",
        classes=CLASSES,
        feature_cols=FEATURES,
        on_fold=lambda fold, metrics: seen.append(fold),
    )
    assert seen == [0, 1, 2]
    assert result.fold_metrics["n_val"].tolist() == [150, 150, 150]
    assert (result.fold_metrics["n_train"] == 300).all()
    assert result.mean["accuracy"] > 0.8
    assert result.mean["accuracy"] == pytest.approx(result.fold_metrics["accuracy"].mean())
    assert result.std["accuracy"] >= 0.0 and len(result.results) == 3
    with pytest.raises(ValueError, match="index"):
        cross_validate(
            df,
            folds.reset_index(drop=True).iloc[::-1],
            config=base_config(),
            label_col="y",
            classes=CLASSES,
            feature_cols=FEATURES,
        )
