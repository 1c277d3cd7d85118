"""Pipeline configuration: one YAML file per dataset in `configs/`, one pydantic model per stage.

Defaults live on the stage models (in `tasks/`); this module only composes them
and resolves relative paths against the project root (the folder holding the
config's `configs/` directory).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sluice.labelstudio_settings import LabelStudioSettings
from tasks.annotations import AnnotationConfig
from tasks.clean import CleanConfig
from tasks.columns import LABEL
from tasks.consensus import ConsensusConfig
from tasks.data_quality import DataQualityConfig
from tasks.db_urls import check_no_password
from tasks.demo_data import DATASETS
from tasks.generation import GenerationConfig
from tasks.ingest import SourceConfig
from tasks.labels import LabelsConfig
from tasks.promotion import PromotionConfig
from tasks.split import SplitConfig
from tasks.train import TrainConfig

GENERATION = "generation"  # the train.task of text generation (tasks/modalities/generation.py)


class ConfigError(ValueError):
    """A pipeline config cannot be read; the message names the file and the field."""


class ColumnsConfig(BaseModel):
    """Roles of the source columns: the one place each is set (the split, training and checks read them here)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    group: str | None = None
    time: str | None = None
    image: str | None = None
    audio: str | None = None
    features: list[str] = Field(default_factory=list)


class ExpectationsConfig(BaseModel):
    """Great Expectations suites (JSON files in `expectations/`) for raw and clean data."""

    model_config = ConfigDict(extra="forbid")

    raw_suite: str | None = None
    clean_suite: str | None = None


class TuningConfig(BaseModel):
    """Hyperparameter search and cross-validation before the final training."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "grid", "optuna"] = "none"
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """train field -> values, e.g. {lr: [0.001, 0.01, 0.1]} (method: grid)."""
    search_space: dict[str, Any] = Field(default_factory=dict)
    """train field -> {type: float, low:, high:, log:} | {type: categorical, choices: [...]} (method: optuna)."""
    n_trials: int = Field(10, ge=1)
    cross_validate: bool = False
    """k-fold cross-validation of the chosen configuration on train+val (k = split.folds, group-aware)."""


class RegisterConfig(BaseModel):
    """MLflow tracking and the model registry."""

    model_config = ConfigDict(extra="forbid")

    model_name: str
    experiment: str | None = None
    tracking_uri: str | None = None
    """None: `$MLFLOW_TRACKING_URI`, else the home's store (`$SLUICE_MLFLOW_DATABASE_URL` or SQLite).

    A database URL names its password (`postgresql://mlflow:${MLFLOW_DB_PASSWORD}@db/mlflow`): settings are logged."""
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)

    @field_validator("tracking_uri")
    @classmethod
    def _uri_names_its_password(cls, value: str | None) -> str | None:
        if value:
            check_no_password(value, where="registry.tracking_uri")
        return value


class DemoConfig(BaseModel):
    """Bundled real data the demo writes under the home before ingesting it like any other file."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    """A data set of `tasks.demo_data.DATASETS` (`sluice data list`)."""
    rows: int | None = None
    """Keep only the first N rows (a quick run); None keeps all."""

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value not in DATASETS:
            raise ValueError(f"unknown demo dataset {value!r}; choose one of {', '.join(DATASETS)}")
        return value


# split.<field> -> columns.<role>: the split takes its column roles from `columns:`.
_SPLIT_ROLES = {
    "text_col": "text",
    "group_col": "group",
    "time_col": "time",
    "image_col": "image",
    "audio_col": "audio",
    "feature_cols": "features",
}
_STRATEGY_NEEDS = {
    "group": ("group", "the column whose rows must stay together, e.g. a user, patient or product id"),
    "temporal": ("time", "the timestamp column that orders train < val < test"),
}


def _as_dict(value: Any) -> dict[str, Any]:
    """A config section as a plain dict (it may arrive as a model when a config is built in code)."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return dict(value) if isinstance(value, dict) else {}


# (old section, field) -> new section: settings that moved, still read from the old place with a warning.
_MOVED = {
    ("consensus", "overlap"): "annotation",
}


def _with_moved_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """The raw config with settings from their old place moved to their one home (a FutureWarning each)."""
    raw = dict(raw)
    for (old, field), new in _MOVED.items():
        *parents, leaf = old.split(".")
        holder: Any = raw
        for name in parents:
            holder = holder.get(name) if isinstance(holder, dict) else None
        section = holder.get(leaf) if isinstance(holder, dict) else None
        if not isinstance(section, dict) or field not in section:
            continue
        value = section.pop(field)
        target = raw.get(new)
        if not isinstance(target, dict):
            if new == "annotation" and target is None:
                continue  # no annotation stage: the old setting had no effect
            target = {}
        if field in target and target[field] != value:
            raise ValueError(
                f"{old}.{field} is {value!r} but {new}.{field} is {target[field]!r}; the setting lives under "
                f"{new}.{field}: remove {old}.{field}"
            )
        raw[new] = {**target, field: value}
        warnings.warn(f"{old}.{field} has moved to {new}.{field}; read from the old place for now", FutureWarning, 2)
    return raw


def _split_with_column_roles(raw: dict[str, Any]) -> dict[str, Any]:
    """The raw config with the split's column roles filled in from `columns:` (and old split fields moved there).

    Raises:
        ValueError: split and columns name different columns for one role, split.label_col names
            a column other than the labels, or the strategy's role is not set.
    """
    if any(not isinstance(raw.get(k), dict | BaseModel | None) for k in ("columns", "split")):
        return raw  # not mappings: the field validation names them
    columns, split = _as_dict(raw.get("columns")), _as_dict(raw.get("split"))
    for field, role in _SPLIT_ROLES.items():
        old = split.pop(field, None)
        if old in (None, [], ()):
            continue
        if role == "features":
            old = list(old)
        current = columns.get(role)
        if current not in (None, []) and current != old:
            raise ValueError(
                f"split.{field} is {old!r} but columns.{role} is {current!r}; a column role is set once, "
                f"under columns.{role}: remove split.{field}"
            )
        columns[role] = old  # an older config that set the role under split: still read
    label_col = split.pop("label_col", None)
    if label_col not in (None, LABEL):
        raise ValueError(
            f"split.label_col is {label_col!r}, but the split stratifies on the resolved labels (column "
            f"{LABEL!r}, from labels.source); remove split.label_col"
        )
    strategy = split.get("strategy", "stratified")
    if strategy in _STRATEGY_NEEDS and not columns.get(_STRATEGY_NEEDS[strategy][0]):
        role, what = _STRATEGY_NEEDS[strategy]
        raise ValueError(f"split.strategy is {strategy!r}, which needs columns.{role}: {what}; set columns.{role}")
    label_col = (
        None if _as_dict(raw.get("labels")).get("source") == "none" else LABEL
    )  # no labels: an unstratified split
    split |= {field: columns.get(role) or None for field, role in _SPLIT_ROLES.items()} | {"label_col": label_col}
    return raw | {"columns": columns, "split": split}


def _generation_labels(raw: dict[str, Any]) -> dict[str, Any]:
    """train.task generation needs no labels section: it stands for `labels: {source: none}`."""
    if raw.get("labels") is None and _as_dict(raw.get("train")).get("task") == GENERATION:
        return raw | {"labels": {"source": "none"}}
    return raw


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    source: SourceConfig
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    expectations: ExpectationsConfig = Field(default_factory=ExpectationsConfig)
    labels: LabelsConfig
    """`source: none` with `train.task: generation`, whose text needs no labels (and where it is the default)."""
    annotation: AnnotationConfig | None = None
    labelstudio: LabelStudioSettings = Field(default_factory=LabelStudioSettings)
    consensus: ConsensusConfig = Field(default_factory=ConsensusConfig)
    data_quality: DataQualityConfig = Field(default_factory=DataQualityConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    generation: GenerationConfig | None = None
    """The text-generation stage (train.task: generation)."""
    registry: RegisterConfig
    demo: DemoConfig | None = None

    # Set by load_config, not by users: where relative paths resolve, and which file this came from.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _column_roles(cls, raw: Any) -> Any:
        return _split_with_column_roles(_with_moved_settings(_generation_labels(raw))) if isinstance(raw, dict) else raw

    @model_validator(mode="after")
    def _generation_has_its_section(self) -> PipelineConfig:
        generating = self.train.task == GENERATION
        if generating != (self.labels.source == "none"):
            raise ValueError(
                f"train.task is {self.train.task!r} with labels.source {self.labels.source!r}: labels.source 'none' "
                "goes with train.task 'generation' (the text is the training signal) and only with it"
            )
        if not generating:
            return self
        if self.annotation is not None:
            raise ValueError("train.task 'generation' needs no labels: remove the annotation section")
        if self.generation is None or not self.columns.text:
            raise ValueError("train.task 'generation' needs a generation section and columns.text (the texts)")
        if "text_column" not in self.generation.model_fields_set:
            self.generation = self.generation.model_copy(update={"text_column": self.columns.text})
        elif self.generation.text_column != self.columns.text:
            raise ValueError(
                f"generation.text_column is {self.generation.text_column!r} but columns.text is {self.columns.text!r}; "
                "the text column is set once, under columns.text: remove generation.text_column"
            )
        return self

    @model_validator(mode="after")
    def _cross_validation_has_folds(self) -> PipelineConfig:
        if self.tuning.cross_validate and self.split.folds < 2:
            raise ValueError(
                f"tuning.cross_validate is true but split.folds is {self.split.folds}; set split.folds to the "
                "number of folds (e.g. 5), or tuning.cross_validate: false"
            )
        return self

    @model_validator(mode="after")
    def _distributed_trains_once(self) -> PipelineConfig:
        searching = self.tuning.method != "none" or self.tuning.cross_validate
        if self.train.distributed is not None and searching:
            what = f"tuning.method {self.tuning.method!r}" if self.tuning.method != "none" else "tuning.cross_validate"
            raise ValueError(
                f"{what} is set with train.distributed: tuning trials and cross-validation folds do not run under "
                "DDP yet; remove train.distributed, or set tuning.method: none and tuning.cross_validate: false"
            )
        return self

    @model_validator(mode="after")
    def _promotion_alpha_can_fail(self) -> PipelineConfig:
        floor = self.registry.promotion.alpha_threshold
        if floor is not None and floor <= self.consensus.alpha_threshold:
            raise ValueError(
                f"registry.promotion.alpha_threshold {floor} is not above consensus.alpha_threshold "
                f"{self.consensus.alpha_threshold}, which already stops a run before training, so it could never "
                "hold a version back; raise it, or remove it"
            )
        return self

    def resolve_path(self, value: str | Path) -> Path:
        """A config path made absolute against the project root."""
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (self.base_dir / candidate).resolve()

    def section_hash(self, *sections: str) -> str:
        """Content hash of some config sections: a cache and idempotency key."""
        return sections_hash(**{name: getattr(self, name) for name in sections})

    def flat_params(self) -> dict[str, str]:
        """Every setting as a flat `section.key` -> string map (MLflow params)."""
        flat: dict[str, str] = {}

        def _walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    _walk(f"{prefix}.{key}" if prefix else str(key), inner)
            else:
                flat[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)

        _walk("", self.model_dump(mode="json"))
        return flat


def sections_hash(**sections: BaseModel | None) -> str:
    """Content hash of config sections by name (what `PipelineConfig.section_hash` hashes): a cache key part."""
    dumped = {name: None if section is None else section.model_dump(mode="json") for name, section in sections.items()}
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


def _project_root(config_path: Path) -> Path:
    resolved = config_path.resolve()
    if resolved.parent.name == "configs":  # the folder holding configs/ (what `sluice init` writes)
        return resolved.parent.parent
    for parent in resolved.parents:
        if (parent / "pyproject.toml").is_file() or (parent / "prefect.yaml").is_file():
            return parent
    return config_path.resolve().parent


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"  - {where}: {item['msg']}")
    return "\n".join(parts)


def parse_config(raw: dict[str, Any], *, base_dir: Path, path: Path | None = None) -> PipelineConfig:
    """A config from a dict (what a Prefect deployment passes), paths resolved against base_dir."""
    where = str(path) if path else "the pipeline config"
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where} is not a valid pipeline config:\n{_describe(exc)}") from None
    return config.model_copy(update={"base_dir": base_dir, "path": path})


def load_config(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline config file.

    Raises:
        ConfigError: the file is missing, not YAML, or has a bad field (each is named).
    """
    config_path = Path(path)
    if not config_path.is_file():
        available = sorted(p.name for p in config_path.parent.glob("*.yaml")) if config_path.parent.is_dir() else []
        hint = f" Available: {', '.join(available)}." if available else ""
        raise ConfigError(f"pipeline config {config_path} does not exist.{hint}")
    try:
        raw = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path} must hold a mapping of stage sections (source, labels, …).")
    return parse_config(raw, base_dir=_project_root(config_path), path=config_path.resolve())
