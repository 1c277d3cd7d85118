"""Hyperparameter search and cross-validation around `train_model`.

No MLflow here: callers pass `on_trial` / `on_fold` callbacks (the flow logs nested runs from them).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from tasks.evaluate import evaluate_predictions
from tasks.train import TrainConfig, TrainResult, train_model

logger = logging.getLogger(__name__)

SPACE_TYPES = ("float", "int", "categorical")
_DONT_TUNE = {"task", "device", "progress", "num_workers", "pin_memory"}


@dataclass
class TuneResult:
    """The winning parameters and every trial (params, best-epoch val metrics, state)."""

    best_params: dict[str, Any]
    best_metric: float
    best_config: TrainConfig
    trials: pd.DataFrame
    monitor: str


@dataclass
class CVResult:
    """Per-fold metrics on each held-out fold, with their mean and standard deviation."""

    fold_metrics: pd.DataFrame  # one row per fold: fold, n_train, n_val, best_epoch, metrics...
    mean: dict[str, float]
    std: dict[str, float]
    results: list[TrainResult]


def _apply(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    unknown = sorted(set(params) - set(TrainConfig.model_fields))
    if unknown:
        raise ValueError(f"parameters {unknown} are not TrainConfig fields; valid: {sorted(TrainConfig.model_fields)}")
    fixed = sorted(set(params) & _DONT_TUNE)
    if fixed:
        raise ValueError(f"parameters {fixed} are not hyperparameters; set them on the base config instead")
    return TrainConfig.model_validate({**base.model_dump(), **params})


def _refuse_distributed(config: TrainConfig, what: str) -> None:
    """Trials and folds train one after another in this process; DDP for each is not supported yet."""
    if config.distributed is not None:
        raise ValueError(
            f"{what} do not support train.distributed yet (each would start its own DDP launch); "
            "remove train.distributed for the search, or tune without it and then train with it"
        )


def _better(value: float, best: float | None, mode: str) -> bool:
    if np.isnan(value):
        return False
    return best is None or (value < best if mode == "min" else value > best)


def _columns(
    text_col: str | None, feature_cols: list[str] | None, image_col: str | None, audio_col: str | None
) -> dict[str, Any]:
    return {"text_col": text_col, "feature_cols": feature_cols, "image_col": image_col, "audio_col": audio_col}


def grid_search(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    base: TrainConfig,
    grid: dict[str, list[Any]],
    label_col: str,
    classes: list[str],
    text_col: str | None = None,
    feature_cols: list[str] | None = None,
    image_col: str | None = None,
    audio_col: str | None = None,
    on_trial: Callable[[dict[str, Any], dict[str, float]], None] | None = None,
) -> TuneResult:
    """Train every combination of `grid` values on top of `base`; pick the best by `base.monitor`.

    Every combination is validated before the first one trains, so a bad value fails in seconds.

    Args:
        grid: TrainConfig field -> values to try, e.g. {"lr": [1e-3, 3e-3], "hidden": [[32], [64]]}.
        on_trial: called after each trial with its params and its best epoch's metrics.
    """
    _refuse_distributed(base, "tuning trials (grid search)")
    if not grid or any(len(v) == 0 for v in grid.values()):
        raise ValueError(f"grid {grid} must map each field to a non-empty list of values")
    names = list(grid)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]
    configs = [_apply(base, params) for params in combos]
    rows: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any], TrainConfig] | None = None
    for number, (params, config) in enumerate(zip(combos, configs, strict=True)):
        result = train_model(
            train,
            val,
            label_col=label_col,
            classes=classes,
            config=config,
            **_columns(text_col, feature_cols, image_col, audio_col),
        )
        metrics = {**result.best, "best_epoch": float(result.best_epoch)}
        logger.info("trial %d/%d %s: %s=%.4f", number + 1, len(combos), params, base.monitor, result.best_metric)
        rows.append({"trial": number, **{f"param_{k}": v for k, v in params.items()}, **metrics, "state": "complete"})
        if on_trial is not None:
            on_trial(dict(params), dict(metrics))
        if best is None or _better(result.best_metric, best[0], base.monitor_mode):
            best = (result.best_metric, params, config)
    assert best is not None
    return TuneResult(
        best_params=best[1],
        best_metric=best[0],
        best_config=best[2],
        trials=pd.DataFrame(rows),
        monitor=base.monitor,
    )


def _suggest(trial: Any, name: str, spec: Any) -> Any:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "float":
        return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    if kind == "int":
        return trial.suggest_int(
            name,
            int(spec["low"]),
            int(spec["high"]),
            step=int(spec.get("step", 1)),
            log=bool(spec.get("log", False)),
        )
    if kind == "categorical":
        choices = list(spec["choices"])
        if all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            return trial.suggest_categorical(name, choices)
        # Optuna stores only scalars: lists such as hidden=[64, 32] travel as JSON text.
        return json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in choices]))
    raise ValueError(
        f"search_space[{name!r}] = {spec!r} is not understood; use a list of choices or a dict with "
        f"type in {list(SPACE_TYPES)} (float/int need low and high, optional log; categorical needs choices)"
    )


def _check_search(base: TrainConfig, search_space: dict[str, Any], n_trials: int) -> None:
    """Raise naming what is wrong with a search before any trial runs."""
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials}; run at least one trial")
    if not search_space:
        raise ValueError("search_space is empty; name at least one TrainConfig field to search")
    _apply(base, {})  # the base itself must be valid
    bad = sorted(set(search_space) - set(TrainConfig.model_fields))
    if bad:
        raise ValueError(
            f"search_space fields {bad} are not TrainConfig fields; valid: {sorted(TrainConfig.model_fields)}"
        )


def _trial_row(number: int, params: dict[str, Any], metrics: dict[str, float], state: str) -> dict[str, Any]:
    return {"trial": number, **{f"param_{k}": v for k, v in params.items()}, **metrics, "state": state}


def optuna_search(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    base: TrainConfig,
    search_space: dict[str, Any],
    n_trials: int,
    label_col: str,
    classes: list[str],
    text_col: str | None = None,
    feature_cols: list[str] | None = None,
    image_col: str | None = None,
    audio_col: str | None = None,
    seed: int = 0,
    timeout: float | None = None,
    n_startup_trials: int = 5,
    n_warmup_epochs: int = 1,
    on_trial: Callable[[dict[str, Any], dict[str, float]], None] | None = None,
) -> TuneResult:
    """Search with Optuna's TPE sampler; the MedianPruner stops trials whose per-epoch monitor lags.

    Args:
        search_space: field -> {"type": "float", "low": 1e-4, "high": 1e-2, "log": True} |
            {"type": "int", "low": 16, "high": 128} | {"type": "categorical", "choices": [...]} | [choices].
        n_startup_trials / n_warmup_epochs: the pruner waits for this many finished trials, and within a
            trial for this many epochs, before it prunes.
        on_trial: called after every trial (complete or pruned; metrics carry `pruned` = 0/1).
    """
    import optuna  # lazy: only searches need it

    _refuse_distributed(base, "tuning trials (optuna search)")
    _check_search(base, search_space, n_trials)
    direction: Literal["minimize", "maximize"] = "minimize" if base.monitor_mode == "min" else "maximize"
    rows: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {name: _suggest(trial, name, spec) for name, spec in search_space.items()}
        config = _apply(base, params)
        last: dict[str, float] = {}

        def report(epoch: int, metrics: dict[str, float]) -> None:
            last.clear()
            last.update(metrics)
            trial.report(metrics[base.monitor], step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {base.monitor}={metrics[base.monitor]:.4f} below median")

        try:
            result = train_model(
                train,
                val,
                label_col=label_col,
                classes=classes,
                config=config,
                on_epoch=report,
                **_columns(text_col, feature_cols, image_col, audio_col),
            )
        except optuna.TrialPruned:
            metrics = {**last, "pruned": 1.0}
            rows.append(_trial_row(trial.number, params, metrics, "pruned"))
            if on_trial is not None:
                on_trial(dict(params), metrics)
            raise
        metrics = {**result.best, "best_epoch": float(result.best_epoch), "pruned": 0.0}
        rows.append(_trial_row(trial.number, params, metrics, "complete"))
        if on_trial is not None:
            on_trial(dict(params), dict(metrics))
        return result.best_metric

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial drowns the flow's own log
    try:
        study = optuna.create_study(
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_epochs),
        )
        study.optimize(objective, n_trials=n_trials, timeout=timeout)
    finally:
        optuna.logging.set_verbosity(previous)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(
            f"all {len(study.trials)} trials were pruned or failed; widen the search space or raise n_startup_trials"
        )
    best_trial = study.best_trial
    best_params = {name: _decode(best_trial.params[name], search_space[name]) for name in search_space}
    return TuneResult(
        best_params=best_params,
        best_metric=float(best_trial.value if best_trial.value is not None else "nan"),
        monitor=base.monitor,
        best_config=_apply(base, best_params),
        trials=pd.DataFrame(rows),
    )


def _decode(value: Any, spec: Any) -> Any:
    choices = spec if isinstance(spec, list) else spec.get("choices") if isinstance(spec, dict) else None
    if choices is not None and not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
        return json.loads(value)
    return value


def cross_validate(
    df: pd.DataFrame,
    folds: pd.Series,
    *,
    config: TrainConfig,
    label_col: str,
    classes: list[str],
    text_col: str | None = None,
    feature_cols: list[str] | None = None,
    image_col: str | None = None,
    audio_col: str | None = None,
    on_fold: Callable[[Any, dict[str, float]], None] | None = None,
) -> CVResult:
    """Train once per fold value, holding that fold out; score it with `evaluate_predictions`.

    The held-out fold is also the early-stopping set, which makes the estimate slightly optimistic;
    keep a separate test set for the number you report.

    Args:
        folds: fold id per row, aligned with `df`'s index (e.g. from a grouped K-fold split).
    """
    _refuse_distributed(config, "cross-validation folds")
    if not folds.index.equals(df.index):
        raise ValueError("folds must share df's index (one fold id per row); build it from df")
    if folds.isna().any():
        raise ValueError(f"{int(folds.isna().sum())} rows have no fold id; assign every row a fold")
    fold_ids = sorted(folds.unique().tolist(), key=str)
    if len(fold_ids) < 2:
        raise ValueError(f"cross-validation needs at least two folds; got {fold_ids}")
    rows: list[dict[str, Any]] = []
    results: list[TrainResult] = []
    for fold in fold_ids:
        held_out = folds == fold
        train, val = df[~held_out], df[held_out]
        result = train_model(
            train,
            val,
            label_col=label_col,
            classes=classes,
            config=config,
            **_columns(text_col, feature_cols, image_col, audio_col),
        )
        metrics = evaluate_predictions(val[label_col].astype(str), result.predictor.predict_proba(val), classes)
        metrics["best_epoch"] = float(result.best_epoch)
        rows.append({"fold": fold, "n_train": len(train), "n_val": len(val), **metrics})
        results.append(result)
        if on_fold is not None:
            on_fold(fold, dict(metrics))
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("fold", "n_train", "n_val")]
    return CVResult(
        fold_metrics=table,
        mean={c: float(table[c].mean()) for c in numeric},
        std={c: float(table[c].std(ddof=1)) for c in numeric},
        results=results,
    )
