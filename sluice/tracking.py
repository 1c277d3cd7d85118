"""MLflow: the one module that talks to tracking and the model registry.

Runs, params, metrics, dataset inputs, artifacts, the servable model, registry
versions, tags and aliases all go through here.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.db_urls import driver_url, expand_url, redact_url

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVING_FILE = Path(__file__).with_name("serving.py")
GENERATOR_SERVING_FILE = Path(__file__).with_name("serving_generation.py")
# served_as -> the model-from-code file and the name of the saved model directory in its artifacts
_SERVED = {"classifier": (SERVING_FILE, "predictor"), "generator": (GENERATOR_SERVING_FILE, "generator")}
INFERENCE_CODE = REPO_ROOT / "tasks"
_PARAM_BATCH = 100  # MLflow accepts at most 100 params per batch call
_MAX_PARAM_CHARS = 6000


class TrackingError(RuntimeError):
    """MLflow could not be reached or refused a write; the message says where and what to do."""


class TrackingUnreachableError(TrackingError):
    """MLflow did not answer (as opposed to answering no): a service that went away, not bad input."""


@dataclass
class RegisteredVersion:
    model_name: str
    version: str
    run_id: str
    experiment_id: str
    model_uri: str
    tracking_uri: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    existing: bool = False
    """True when identical inputs had already produced this version (nothing new was logged)."""


def _mlflow() -> Any:
    # Imported lazily: `import mlflow` costs seconds and sets up logging handlers.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    return mlflow


def resolve_tracking_uri(configured: str | None, home_store: str) -> str:
    """Where MLflow lives: the configured URI, else `$MLFLOW_TRACKING_URI`, else the home's SQLite store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or home_store


def configure_tracking(tracking_uri: str, *, artifacts_dir: Path | None = None) -> str:
    """Point MLflow's tracking and registry at `tracking_uri` (SQLite folders are created).

    `${VAR}`s in the URI (a PostgreSQL password) are filled in here, for MLflow only: the URI sluice
    passes around, records and shows keeps naming them.
    """
    mlflow = _mlflow()
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    target = driver_url(expand_url(tracking_uri, where=f"the MLflow tracking URI {tracking_uri}"), "psycopg")
    # set_tracking_uri also writes $MLFLOW_TRACKING_URI (for subprocesses); put the user's value back, or a
    # later run in this process would mistake this run's URI for the user's choice.
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(target)
    mlflow.set_registry_uri(target)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return tracking_uri


def _shown_uri() -> str:
    """The tracking URI MLflow uses, with its password masked: for messages and records."""
    return redact_url(str(_mlflow().get_tracking_uri()))


def _absent(exc: Exception) -> bool:
    """True when MLflow answered that the thing does not exist (as opposed to refusing or not answering)."""
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _alias_absent(exc: Exception, alias: str) -> bool:
    """True only for "no such model" or "no such alias": any other refusal is an error, never "no champion".

    MLflow answers a missing alias with INVALID_PARAMETER_VALUE ("Registered model alias champion not
    found."), the same code as a malformed request, so the message decides.
    """
    message = str(getattr(exc, "message", "") or exc)
    missing_alias = getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE" and (
        f"alias {alias} not found" in message
    )
    return _absent(exc) or missing_alias


def _unreachable(exc: Exception) -> TrackingError:
    return TrackingUnreachableError(
        f"MLflow at {_shown_uri()} could not be reached or refused ({type(exc).__name__}: "
        f"{str(exc)[:300]}). Check registry.tracking_uri / MLFLOW_TRACKING_URI."
    )


def ensure_experiment(name: str, *, artifacts_dir: Path | None) -> str:
    """The experiment id for `name`, created with local artifact storage when new.

    Raises:
        TrackingError: the tracking server cannot be reached.
    """
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = artifacts_dir.as_uri() if artifacts_dir else None
        return str(client.create_experiment(name, artifact_location=location))
    except Exception as exc:  # MlflowException, requests errors, sqlite errors: all mean "cannot write"
        raise TrackingUnreachableError(
            f"MLflow at {_shown_uri()} refused or could not be reached ({type(exc).__name__}: "
            f"{str(exc)[:300]}). Check registry.tracking_uri / MLFLOW_TRACKING_URI; the trained model and "
            "reports are kept under the project home: log them later with `sluice register <run folder>`."
        ) from exc


def _chunks(items: list[tuple[str, str]], size: int) -> Iterable[list[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def find_version_by_tag(model_name: str, key: str, value: str) -> RegisteredVersion | None:
    """The newest registered version of `model_name` carrying tag key=value, if any."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{model_name}' and tag.{key} = '{value}'")
    except Exception as exc:
        if _absent(exc):
            return None
        raise _unreachable(exc) from exc
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    return _describe_version(newest, existing=True)


def _describe_version(version: Any, *, existing: bool = False) -> RegisteredVersion:
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    run = client.get_run(version.run_id)
    return RegisteredVersion(
        model_name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        experiment_id=run.info.experiment_id,
        model_uri=f"models:/{version.name}/{version.version}",
        tracking_uri=_shown_uri(),
        tags=dict(version.tags or {}),
        aliases=list(getattr(version, "aliases", []) or []),
        existing=existing,
    )


def log_training_run(
    *,
    experiment: str,
    artifacts_dir: Path | None,
    run_name: str,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    history: list[dict[str, float]],
    metrics: Mapping[str, float],
    datasets: Mapping[str, tuple[pd.DataFrame, str, str | None]],
    artifacts: Iterable[Path],
    predictor_dir: Path,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    model_name: str,
    version_tags: Mapping[str, str],
    description: str,
    registration_key: str,
    promote: bool = False,
    decision_tags: Mapping[str, str] | None = None,
    children: Iterable[Mapping[str, Any]] = (),
    served_as: str = "classifier",
) -> RegisteredVersion:
    """Log one training run, register its model as a new version, tag it and move its aliases.

    Idempotent per `registration_key`: a retry (or `sluice register`) after a failure finds the run
    by its key tag and resumes it, skipping what was logged already, and reuses a version already
    registered from it, so a registration that fails and succeeds on retry leaves one run and one
    version. The version is created last, after every other write succeeded, and removed again if
    describing, tagging or aliasing it fails: a reviewer never sees a half-registered version.

    Args:
        history: per-epoch metric dicts with an "epoch" key.
        datasets: context ("train", "val", "test", "holdout") -> (frame, source, target column).
        registration_key: names this registration (the flow run and its inputs), stored as a run tag.
        children: tuning trials ({name, params, metrics}), logged as nested runs of this one.
        served_as: "classifier" (serving.py wraps the predictor in `predictor_dir`) or "generator"
            (serving_generation.py wraps the text generator saved in `predictor_dir`).
    """
    mlflow = _mlflow()
    experiment_id = ensure_experiment(experiment, artifacts_dir=artifacts_dir)
    client = mlflow.MlflowClient()
    run_id = _find_or_create_run(client, experiment_id, run_name, registration_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow warns about pip inference, git and hints: noise for users
        with mlflow.start_run(run_id=run_id):
            logged = dict(client.get_run(run_id).data.tags)
            if _LOGGED_DATA not in logged:
                _log_data(params=params, tags=tags, history=history, metrics=metrics, datasets=datasets)
                mlflow.set_tag(_LOGGED_DATA, "done")
            _log_children(client, experiment_id, run_id, children)
            for path in artifacts:  # same paths overwrite: safe to repeat
                if path.is_dir():
                    mlflow.log_artifacts(str(path), artifact_path=path.name)
                elif path.is_file():
                    mlflow.log_artifact(str(path), artifact_path="reports")
            model_uri = logged.get(_LOGGED_MODEL)
            if model_uri is None:
                serving_file, artifact = _SERVED[served_as]
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(serving_file),
                    artifacts={artifact: str(predictor_dir)},
                    code_paths=[str(INFERENCE_CODE)],
                    signature=_signature(input_example, output_example),
                    input_example=input_example,
                    pip_requirements=_serving_requirements(with_transformers=served_as == "generator"),
                )
                model_uri = str(info.model_uri)
                mlflow.set_tag(_LOGGED_MODEL, model_uri)
    registered = _find_or_register(client, model_name, model_uri, run_id, version_tags)
    try:
        client.update_model_version(model_name, registered, description=description)
        apply_decision(model_name, registered, promote=promote, tags=decision_tags or {})
    except Exception as exc:
        # Never leave a half-registered version behind for a reviewer to find.
        client.delete_model_version(model_name, registered)
        raise TrackingError(
            f"version {registered} of {model_name} could not be finished ({exc}); it was removed again. "
            "Register it later with `sluice register <run folder>`."
        ) from exc
    return _describe_version(client.get_model_version(model_name, registered))


_REGISTRATION_KEY = "sluice.registration_key"
_LOGGED_DATA = "sluice.logged.data"  # params, tags, metrics and datasets are in the run
_LOGGED_MODEL = "sluice.logged.model_uri"  # the servable model is in the run, at this URI


def _find_or_create_run(client: Any, experiment_id: str, run_name: str, key: str) -> str:
    """The run of this registration: the one carrying its key tag (an earlier attempt), else a new one."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{_REGISTRATION_KEY}` = '{key}'", max_results=1)
    if found:
        return str(found[0].info.run_id)
    return str(client.create_run(experiment_id, run_name=run_name, tags={_REGISTRATION_KEY: key}).info.run_id)


def _log_data(
    *,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    history: list[dict[str, float]],
    metrics: Mapping[str, float],
    datasets: Mapping[str, tuple[pd.DataFrame, str, str | None]],
) -> None:
    """Params, tags, per-epoch and final metrics, and the dataset inputs of the active run."""
    mlflow = _mlflow()
    items = [(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in sorted(params.items())]
    for chunk in _chunks(items, _PARAM_BATCH):
        mlflow.log_params(dict(chunk))  # the same value again is accepted: a resumed run repeats this safely
    mlflow.set_tags(dict(tags))
    for row in history:
        step = int(row.get("epoch", 0))
        mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=step)
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    for context, (frame, source, target) in datasets.items():
        mlflow.log_input(mlflow.data.from_pandas(frame, source=source, name=context, targets=target), context=context)


def _log_children(client: Any, experiment_id: str, run_id: str, children: Iterable[Mapping[str, Any]]) -> None:
    """Tuning trials as nested runs; trials an earlier attempt logged already are not logged twice."""
    mlflow = _mlflow()
    wanted = list(children)
    if not wanted:
        return
    existing = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    done = {r.info.run_name for r in existing if r.info.status == "FINISHED"}
    for child in wanted:
        if str(child["name"]) in done:
            continue
        with mlflow.start_run(experiment_id=experiment_id, run_name=str(child["name"]), nested=True):
            mlflow.log_params({k: str(v) for k, v in child["params"].items()})
            mlflow.log_metrics({k: float(v) for k, v in child["metrics"].items()})


def _find_or_register(client: Any, model_name: str, model_uri: str, run_id: str, tags: Mapping[str, str]) -> str:
    """The version registered from this run (an earlier attempt), else a new one."""
    mlflow = _mlflow()
    try:
        for version in client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'"):
            return str(version.version)
        return str(mlflow.register_model(model_uri, model_name, tags=dict(tags)).version)
    except Exception as exc:
        raise TrackingError(
            f"run {run_id} was logged but registering model {model_name!r} failed: {exc}. "
            "Register it later with `sluice register <run folder>`."
        ) from exc


def _signature(example: pd.DataFrame, output: pd.DataFrame) -> Any:
    from mlflow.models import infer_signature

    return infer_signature(example, output)


def _serving_requirements(*, with_transformers: bool = False) -> list[str]:
    import numpy
    import torch

    pinned = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"pandas=={pd.__version__}",
        f"numpy=={numpy.__version__}",
    ]
    if with_transformers:  # the text generator is a Hugging Face model and tokenizer
        import tokenizers
        import transformers

        pinned += [f"transformers=={transformers.__version__}", f"tokenizers=={tokenizers.__version__}"]
    return pinned


def set_alias(model_name: str, alias: str, version: str) -> None:
    _mlflow().MlflowClient().set_registered_model_alias(model_name, alias, version)


def delete_alias(model_name: str, alias: str) -> None:
    _mlflow().MlflowClient().delete_registered_model_alias(model_name, alias)


def version_for_alias(model_name: str, alias: str) -> RegisteredVersion | None:
    """The version holding `alias`, or None when the alias (or the model) does not exist.

    Raises:
        TrackingError: MLflow refused the lookup for another reason, or could not be reached.
    """
    client = _mlflow().MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except Exception as exc:
        if _alias_absent(exc, alias):
            return None
        raise _unreachable(exc) from exc
    return _describe_version(version)


def version_split_manifest(version: RegisteredVersion, *, local_root: Path, into: Path) -> pd.DataFrame | None:
    """The split manifest (item_id, split) a version was trained with: its run's artifact, else the home's copy.

    Returns:
        None when neither is there (a version registered before manifests were recorded elsewhere).
    """
    mlflow = _mlflow()
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=version.run_id, artifact_path="split/manifest.parquet", dst_path=str(into)
        )
        return pd.read_parquet(path)
    except Exception:  # an older version without the artifact: look for its manifest by hash under the home
        digest = version.tags.get("sluice.split_manifest_hash", "")
        local = local_root / f"{digest[:16]}.parquet"
        return pd.read_parquet(local) if digest and local.is_file() else None


def set_version_tags(model_name: str, version: str, tags: Mapping[str, str]) -> None:
    client = _mlflow().MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)


def load_model(model_uri: str) -> Any:
    """A pyfunc model by URI (`models:/name@champion`)."""
    return _mlflow().pyfunc.load_model(model_uri)


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(_mlflow().MlflowClient().get_run(run_id).data.metrics)


def log_json(run_id: str, payload: Mapping[str, Any], artifact_file: str) -> None:
    _mlflow().MlflowClient().log_dict(run_id, json.loads(json.dumps(payload, default=str)), artifact_file)


def predict_proba(model_name: str, version: str, frame: pd.DataFrame, classes: list[str]) -> Any:
    """A registered version's class probabilities on `frame` (columns in the order of `classes`).

    Raises:
        TrackingError: the version cannot predict, or predicts other classes than `classes`.
    """
    try:
        output = load_model(f"models:/{model_name}/{version}").predict(frame)
    except Exception as exc:  # an unloadable or incompatible model must not crash the run
        raise TrackingError(f"{model_name} v{version} could not predict: {exc}") from exc
    columns = [f"proba_{c}" for c in classes]
    missing = [c for c in columns if c not in output.columns]
    if missing:
        raise TrackingError(
            f"{model_name} v{version} does not predict the classes {classes} "
            f"(missing {missing}); review it by hand with `sluice promote` / `sluice reject`."
        )
    return output[columns].to_numpy()


def champion_proba(model_name: str, frame: pd.DataFrame, classes: list[str]) -> tuple[str, Any] | None:
    """The champion's version and class probabilities on `frame`, or None without a champion.

    Raises:
        TrackingError: the lookup was refused, or the champion cannot predict these classes.
    """
    champion = version_for_alias(model_name, "champion")
    if champion is None:
        return None
    return champion.version, predict_proba(model_name, champion.version, frame, classes)


def apply_decision(model_name: str, version: str, *, promote: bool, tags: Mapping[str, str]) -> list[str]:
    """Tag the version with the gate's reasons, give it `challenger`, and `champion` when promoted.

    Returns:
        The aliases the version holds afterwards.
    """
    set_version_tags(model_name, version, tags)
    set_alias(model_name, "challenger", version)
    aliases = ["challenger"]
    if promote:
        set_alias(model_name, "champion", version)
        aliases.append("champion")
    return aliases


def review_version(model_name: str, version: str, *, action: str, reviewer: str, reason: str, at: str) -> list[str]:
    """A reviewer's decision: `promote` moves `champion` here; `reject` takes this version's aliases away.

    Returns:
        The aliases the version holds afterwards.

    Raises:
        TrackingError: the version does not exist.
    """
    client = _mlflow().MlflowClient()
    try:
        current = client.get_model_version(model_name, version)
    except Exception as exc:
        if not _absent(exc):
            raise _unreachable(exc) from exc
        raise TrackingError(f"model {model_name!r} has no version {version!r}: {exc}") from None
    set_version_tags(
        model_name,
        version,
        {
            "sluice.review.action": action,
            "sluice.review.by": reviewer,
            "sluice.review.reason": reason,
            "sluice.review.at": at,
            "sluice.promotion": "champion" if action == "promote" else "rejected",
        },
    )
    aliases = set(getattr(current, "aliases", []) or [])
    if action == "promote":
        set_alias(model_name, "champion", version)
        aliases.add("champion")
    else:
        for alias in sorted(aliases):
            delete_alias(model_name, alias)
        aliases.clear()
    return sorted(aliases)


def record_review_timeout(model_name: str, version: str, *, reason: str, at: str) -> list[str]:
    """Tag a version nobody reviewed in time; a decision made meanwhile (`sluice promote`) is left as it is.

    Returns:
        The aliases the version holds.
    """
    current = _mlflow().MlflowClient().get_model_version(model_name, version)
    if "sluice.review.action" not in (current.tags or {}):
        set_version_tags(
            model_name,
            version,
            {"sluice.review.action": "timed out", "sluice.review.reason": reason, "sluice.review.at": at},
        )
    return sorted(getattr(current, "aliases", []) or [])


_FRAME_KEYS = ("input_example", "output_example")


def write_pending(record: Mapping[str, Any], folder: Path, *, tracking_uri: str) -> Path:
    """Keep a registration on disk (frames as Parquet) so it can be logged later when MLflow was down."""
    folder.mkdir(parents=True, exist_ok=True)
    plain: dict[str, Any] = {}
    for key, value in record.items():
        if key in _FRAME_KEYS:
            value.to_parquet(folder / f"{key}.parquet", index=False)
        elif key == "datasets":
            plain[key] = {}
            for context, (frame, source, target) in value.items():
                frame.to_parquet(folder / f"dataset_{context}.parquet", index=False)
                plain[key][context] = [source, target]
        elif key == "artifacts":
            plain[key] = [str(p) for p in value]
        elif isinstance(value, Path):
            plain[key] = str(value)
        else:
            plain[key] = value
    path = folder / "pending_registration.json"
    path.write_text(json.dumps({"tracking_uri": tracking_uri, "record": plain}, indent=2, default=str))
    return path


def read_pending(folder: Path) -> tuple[dict[str, Any], str]:
    """A registration kept by `write_pending`, ready for `log_training_run(**record)`, and its tracking URI.

    Raises:
        TrackingError: the folder holds no pending registration.
    """
    path = folder / "pending_registration.json"
    if not path.is_file():
        raise TrackingError(f"{folder} holds no pending registration (pending_registration.json is missing).")
    saved = json.loads(path.read_text())
    record: dict[str, Any] = saved["record"]
    for key in _FRAME_KEYS:
        record[key] = pd.read_parquet(folder / f"{key}.parquet")
    record["datasets"] = {
        context: (pd.read_parquet(folder / f"dataset_{context}.parquet"), source, target)
        for context, (source, target) in record["datasets"].items()
    }
    record["artifacts"] = [Path(p) for p in record["artifacts"]]
    for key in ("artifacts_dir", "predictor_dir"):
        record[key] = Path(record[key]) if record.get(key) else None
    return record, str(saved["tracking_uri"])
