"""Profile a data source and draft what the pipeline needs to run on it: a config, two suites, a label config.

`sluice init` calls these. The data is read with ingest's own readers, so the profile sees the
columns and types the pipeline will see. The raw suite is drawn from those rows; the clean suite from
the same rows after the clean stage the drafted config runs, so each suite passes on the data it was
drafted from, and what it checks on new data is: the columns are still there, ids stay unique,
columns that had no nulls still have none, values stay in the sets and ranges seen (with a margin).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from tasks.clean import CleanConfig, clean_frame
from tasks.columns import ADDED, ITEM_ID, RESERVED_PREFIX, reserved_columns
from tasks.ingest import IngestError, SourceConfig, describe_source, read_source, resolve_sources
from tasks.label_config import build_label_config
from tasks.modalities import get_modality

LOW_CARDINALITY = 20
"""A column with at most this many distinct values (and fewer than half the rows) gets a value set."""
MAX_CLASSES = 100
"""More distinct labels than this is not a classification target."""
RANGE_MARGIN = 0.1
"""Share of a numeric column's observed span added on each side of its range expectation."""
MIN_CLEAN_ROWS = 100
"""The clean gate's row-count floor (lower when the profiled data itself has fewer rows)."""
_IMAGE_SUFFIX = r"(?i)\.(?:png|jpe?g|gif|bmp|tiff?|webp)$"  # no capturing group: pandas warns on those
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

Kind = Literal["integer", "float", "boolean", "datetime", "text"]
Task = Literal["text", "tabular", "image"]


class ProfileError(ValueError):
    """`sluice init` cannot draft from these arguments; the message names the column or file and the fix."""


@dataclass(frozen=True)
class Roles:
    """What the user said each column is (`sluice init --label … --text …`)."""

    label: str
    text: str | None = None
    group: str | None = None
    time: str | None = None
    id: str | None = None
    image: str | None = None
    features: tuple[str, ...] = ()
    labels_from: Literal["column", "annotation"] = "column"

    def named(self) -> dict[str, str]:
        """Option -> column for every role given, e.g. {"--label": "score", "--text": "review"}."""
        single = {
            "--label": self.label,
            "--text": self.text,
            "--group": self.group,
            "--time": self.time,
            "--id": self.id,
            "--image": self.image,
        }
        named = {option: column for option, column in single.items() if column}
        named |= {f"--features {column}": column for column in self.features}
        return named

    @property
    def task(self) -> Task:
        """What the model learns from: an image column, else a text column, else tabular features."""
        if self.image:
            return "image"
        return "text" if self.text else "tabular"


@dataclass(frozen=True)
class ColumnProfile:
    """What one column holds."""

    name: str
    kind: Kind
    rows: int
    nulls: int
    distinct: int
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    values: tuple[Any, ...] | None = None
    """The distinct values, sorted, when there are few of them."""

    @property
    def low_cardinality(self) -> bool:
        return self.values is not None


@dataclass
class DataProfile:
    """A data source as ingest reads it: the files, the rows, and a profile of each column."""

    pattern: str
    files: list[Path]
    frame: pd.DataFrame = field(repr=False)
    malformed: int
    columns: dict[str, ColumnProfile]

    @property
    def rows(self) -> int:
        """Data rows read (malformed lines not counted)."""
        return len(self.frame)

    def where(self) -> str:
        """The files' names, for messages (the first three)."""
        return ", ".join(f.name for f in self.files[:3]) + (
            f" and {len(self.files) - 3} more" if len(self.files) > 3 else ""
        )


@dataclass
class Draft:
    """Everything `sluice init` writes, and what it inferred, in words."""

    name: str
    config: dict[str, Any]
    raw_suite: dict[str, Any]
    clean_suite: dict[str, Any]
    label_config: str | None
    inferred: list[str]
    classes: dict[str, int]
    """Each class and its rows in the profiled data."""

    def files(self, root: Path) -> dict[Path, str]:
        """Each file to write under the project root, with its text."""
        header = "\n".join(f"# {line}" for line in self.inferred)
        files = {
            root / "configs" / f"{self.name}.yaml": f"{header}\n" + _yaml(self.config),
            root / "expectations" / f"{self.name}_raw.json": json.dumps(self.raw_suite, indent=2) + "\n",
            root / "expectations" / f"{self.name}_clean.json": json.dumps(self.clean_suite, indent=2) + "\n",
        }
        if self.label_config is not None:
            files[root / "label_config" / f"{self.name}.xml"] = self.label_config
        return files


def _yaml(config: dict[str, Any]) -> str:
    """The config as YAML that reads like the hand-written ones: sections as blocks, lists on one line."""

    class _Dumper(yaml.SafeDumper):
        pass

    def _flow_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)

    _Dumper.add_representer(list, _flow_list)
    return yaml.dump(config, Dumper=_Dumper, sort_keys=False, width=110)


# --- reading ----------------------------------------------------------------------------------------------
def read_data(pattern: str, *, base_dir: Path, source: SourceConfig) -> DataProfile:
    """Every file a path, folder or glob names, read as ingest reads it, and profiled.

    Raises:
        IngestError: a file is empty, undecodable or unreadable (the message names it).
        ProfileError: nothing matches, or the files hold no data rows.
    """
    try:
        paths = resolve_sources(pattern, base_dir=base_dir)
    except IngestError:
        raise ProfileError(
            f"no file matches {pattern!r} (looked in {base_dir}); give sluice init a CSV, Parquet or JSONL file, a "
            "folder of them or a quoted glob. For a bundled data set: `sluice data list`, then `sluice data write`."
        ) from None
    frames: list[pd.DataFrame] = []
    malformed = 0
    for path in paths:
        described = describe_source(path, source)
        frame, bad = read_source(path, described.format, source)
        if reserved := reserved_columns(frame.columns):
            raise ProfileError(
                f'{path} has column "{reserved[0]}", but names starting with {RESERVED_PREFIX!r} are reserved for '
                f"the columns sluice adds ({', '.join(ADDED[1:])}); rename it in the file "
                f'(e.g. "{reserved[0].removeprefix(RESERVED_PREFIX)}").'
            )
        if frame.empty and not bad:
            raise ProfileError(
                f"{path} has no data rows (only a header?); fill it or point sluice init at another file."
            )
        frames.append(frame)
        malformed += len(bad)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return DataProfile(pattern, paths, frame, malformed, profile_frame(frame))


def _kind(values: pd.Series) -> Kind:
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_float_dtype(values):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "datetime"
    present = values.dropna()
    if len(present) and present.map(lambda v: hasattr(v, "isoformat")).all():  # Arrow date32 arrives as dates
        return "datetime"
    return "text"


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars -> Python scalars, for JSON
    return item() if callable(item) else value


def profile_column(values: pd.Series) -> ColumnProfile:
    """Kind, nulls, distinct values, range or lengths of one column."""
    kind = _kind(values)
    present = values.dropna()
    distinct = int(present.nunique())
    few = kind in ("integer", "boolean", "text") and (
        kind == "boolean" or (distinct <= LOW_CARDINALITY and distinct < max(len(values) / 2, 2))
    )
    extra: dict[str, Any] = {}
    if few:
        extra["values"] = tuple(sorted(_plain(v) for v in present.unique()))
    if kind in ("integer", "float") and len(present):
        extra |= {"minimum": float(present.min()), "maximum": float(present.max())}
    if kind == "text" and len(present):
        lengths = present.astype(str).str.len()
        extra |= {"min_length": int(lengths.min()), "max_length": int(lengths.max())}
    return ColumnProfile(
        name=str(values.name), kind=kind, rows=len(values), nulls=int(values.isna().sum()), distinct=distinct, **extra
    )


def profile_frame(frame: pd.DataFrame) -> dict[str, ColumnProfile]:
    """A profile of every column."""
    return {str(c): profile_column(frame[c]) for c in frame.columns}


# --- roles ------------------------------------------------------------------------------------------------
def check_roles(profile: DataProfile, roles: Roles, *, name: str) -> Roles:
    """The roles checked against the data, with the feature columns filled in for a tabular task.

    Raises:
        ProfileError: a bad name, a column that does not exist, a label that is not a class column,
            a role that does not fit its column, or no inputs to learn from.
    """
    if not _NAME.match(name):
        raise ProfileError(
            f"--name {name!r} must be lowercase letters, digits, '_' or '-', starting with a letter or digit "
            f"(it names configs/{name}.yaml and the registered model); e.g. --name {_suggest_name(name)}"
        )
    _check_columns(profile, roles)
    _check_combination(roles)
    if ITEM_ID in profile.columns:
        if roles.id not in (None, ITEM_ID):
            raise ProfileError(
                f'{profile.where()} has a column "{ITEM_ID}", which is sluice\'s id column, but --id is '
                f'"{roles.id}"; drop --id to use "{ITEM_ID}" as the id, or rename the {ITEM_ID} column in the file.'
            )
        roles = dataclasses.replace(roles, id=ITEM_ID)  # a source column named item_id is the id
    if roles.task != "tabular" or roles.features:
        return roles
    taken = set(roles.named().values())
    features = tuple(
        c.name
        for c in profile.columns.values()
        if c.name not in taken and (c.kind in ("integer", "float", "boolean") or c.low_cardinality)
    )
    if not features:
        raise ProfileError(
            f"nothing to learn from in {profile.where()}: no --text, --image or --features, and no numeric or "
            f"low-cardinality column besides the roles. Pass --text COL, --image COL or --features COL ... "
            f"(columns: {', '.join(profile.columns)})."
        )
    return dataclasses.replace(roles, features=features)


def _check_columns(profile: DataProfile, roles: Roles) -> None:
    """Every named column exists and fits its role."""
    for option, column in roles.named().items():
        if column not in profile.columns:
            raise ProfileError(
                f'column "{column}" ({option}) is not in {profile.where()}; available columns: '
                f"{', '.join(profile.columns)}. Pass one of them to {option.split()[0]}."
            )
    label = profile.columns[roles.label]
    # Each class needs examples: more distinct values than half the rows is an id or a free text, not classes.
    most = min(MAX_CLASSES, max(label.rows // 2, 2))
    if not 2 <= label.distinct <= most:
        raise ProfileError(
            f'column "{roles.label}" (--label) has {label.distinct} distinct values in {profile.where()}; a label '
            f"column of {label.rows} rows holds 2 to {most} classes. Pass the column of classes to --label."
        )
    if roles.time and profile.columns[roles.time].kind not in ("datetime", "integer", "float"):
        raise ProfileError(
            f'column "{roles.time}" (--time) holds {profile.columns[roles.time].kind}, not dates or numbers, in '
            f"{profile.where()}; write it as ISO dates (2024-01-31) or pass another column to --time."
        )


def _check_combination(roles: Roles) -> None:
    """The roles make one model: one kind of input, no label among the features, annotation on text."""
    if roles.features and (roles.text or roles.image):
        raise ProfileError(
            f"--features is for tabular data; with --{'text' if roles.text else 'image'} the model reads that "
            "column alone. Drop --features, or drop --text/--image to train on the features."
        )
    overlap = sorted(c for c in set(roles.features) & {roles.label, roles.group, roles.time, roles.id} if c)
    if overlap:
        raise ProfileError(
            f"--features names {', '.join(overlap)}, which --label/--group/--time/--id already use; a model "
            "must not read its label, and groups, times and ids do not generalise."
        )
    if roles.labels_from == "annotation" and not roles.text:
        raise ProfileError(
            "--labels-from annotation needs --text: the annotation stage sends each item's text to Label Studio."
        )


def _suggest_name(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_-") or "my_dataset"


# --- the draft --------------------------------------------------------------------------------------------
def draft_pipeline(
    profile: DataProfile, roles: Roles, *, name: str, source_path: str, source: SourceConfig | None = None
) -> Draft:
    """Config, suites and (for annotation) a label config for this data; every choice said in `inferred`.

    Args:
        source_path: what the config's `source.path` says (relative to the project root or `{home}`).
        source: the reader options the data was read with; those that differ from the defaults go in the config.
    """
    roles = check_roles(profile, roles, name=name)
    classes = _classes(profile.frame[roles.label])
    clean = draft_clean(roles)
    cleaned = _cleaned(profile.frame, clean)
    reader = (source or SourceConfig(path=source_path)).model_dump(exclude={"path"}, exclude_defaults=True)
    config = _config(profile, roles, name=name, source={"path": source_path, **reader}, clean=clean, classes=classes)
    label_config = None
    if roles.labels_from == "annotation":
        label_config = build_label_config(
            list(classes), object_type=str(get_modality("text").label_studio_tag), data_key="text"
        )
        config["annotation"]["label_config"] = f"label_config/{name}.xml"
    return Draft(
        name=name,
        config=config,
        raw_suite=draft_raw_suite(profile, roles, name=name),
        clean_suite=draft_clean_suite(cleaned, roles, name=name, clean=clean),
        label_config=label_config,
        inferred=_inferred(profile, roles, config, classes),
        classes=classes,
    )


def _classes(labels: pd.Series) -> dict[str, int]:
    # The labels stage compares labels as strings (labels.astype("str")), so the classes are spelled that way.
    counts = labels.dropna().astype("str").value_counts()
    return {str(k): int(counts[k]) for k in sorted(counts.index)}


def task_design(roles: Roles) -> tuple[Task, str]:
    """train.task and train.architecture for the column roles: the modality's first architecture
    (image -> cnn, text -> hashed_bag, else mlp)."""
    task = roles.task
    return task, get_modality(task).architectures[0]


def split_strategy(roles: Roles) -> str:
    """temporal with a time column, group with a group column, else stratified."""
    if roles.time:
        return "temporal"
    return "group" if roles.group else "stratified"


def draft_clean(roles: Roles) -> dict[str, Any]:
    """The clean section: normalise text, drop rows without an input, remove exact duplicates of the input."""
    inputs = [c for c in (roles.text, roles.image) if c]
    clean: dict[str, Any] = {}
    if roles.text:
        clean["normalize_text"] = [roles.text]
    if inputs:
        clean["missing"] = {c: {"action": "drop"} for c in inputs}
        clean["dedupe_on"] = inputs
    return clean


def _cleaned(frame: pd.DataFrame, clean: dict[str, Any]) -> pd.DataFrame:
    """The rows the drafted clean stage keeps, with the source's columns only."""
    if ITEM_ID in frame.columns:  # the source's own id column serves
        return clean_frame(frame, CleanConfig.model_validate(clean)).data
    # The clean stage names the kept copy of a duplicate by its item id: stand-ins, dropped again after.
    with_ids = frame.assign(**{ITEM_ID: [f"{i:016x}" for i in range(len(frame))]})
    return clean_frame(with_ids, CleanConfig.model_validate(clean)).data.drop(columns=[ITEM_ID])


def _config(
    profile: DataProfile,
    roles: Roles,
    *,
    name: str,
    source: dict[str, Any],
    clean: dict[str, Any],
    classes: dict[str, int],
) -> dict[str, Any]:
    task, architecture = task_design(roles)
    strategy = split_strategy(roles)
    columns = {"text": roles.text, "image": roles.image, "group": roles.group, "time": roles.time}
    columns_section: dict[str, Any] = {k: v for k, v in columns.items() if v}
    if task == "tabular":
        columns_section["features"] = list(roles.features)
    split: dict[str, Any] = {"strategy": strategy, "ratios": [0.8, 0.1, 0.1], "seed": 42}
    if roles.id:
        source["id_column"] = roles.id
    majority = max(classes.values()) / sum(classes.values())
    config: dict[str, Any] = {
        "name": name,
        "description": f"{roles.label} from {profile.where()} ({profile.rows:,} rows), drafted by sluice init.",
        "source": source,
        "columns": columns_section,
        "clean": clean,
        "expectations": {
            "raw_suite": f"expectations/{name}_raw.json",
            "clean_suite": f"expectations/{name}_clean.json",
        },
        "labels": {"source": roles.labels_from, "column": roles.label, "classes": list(classes)},
    }
    if roles.labels_from == "annotation":
        config["annotation"] = {
            "project_identifier": name.replace("_", "-"),
            "project_title": f"{name}: which {roles.label}?",
            "overlap": 3,
            "min_coverage": 1.0,
            "simulate": False,
        }
    return config | {
        "split": split,
        "train": {"task": task, "architecture": architecture, **get_modality(task).drafted_train, "seed": 42},
        "registry": {
            "model_name": name.replace("_", "-"),
            "promotion": {
                "metric": "f1_macro",
                # A model must at least match always answering the most common class.
                "floors": {"accuracy": math.floor(majority * 100) / 100},
                "first_run": "promote",
            },
        },
    }


# --- suites -----------------------------------------------------------------------------------------------
def _expectation(kind: str, *, why: str | None = None, row_level: bool = False, **kwargs: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": kind, "kwargs": kwargs}
    if row_level or why:
        entry["meta"] = ({"row_level": True} if row_level else {}) | ({"why": why} if why else {})
    return entry


def draft_raw_suite(profile: DataProfile, roles: Roles, *, name: str) -> dict[str, Any]:
    """Structure of the raw snapshot: rows, every column, unique ids, the columns that had no nulls."""
    expectations = [_expectation("expect_table_row_count_to_be_between", min_value=1)]
    expectations += [_expectation("expect_column_to_exist", column=c) for c in profile.columns]
    expectations.append(_expectation("expect_column_values_to_be_unique", column=ITEM_ID))
    if roles.id and roles.id != ITEM_ID:
        expectations.append(_expectation("expect_column_values_to_be_unique", column=roles.id))
    for column in profile.columns.values():
        if column.nulls == 0:
            # mostly: a few gaps are the clean stage's job; a column that empties out is a broken file
            expectations.append(_expectation("expect_column_values_to_not_be_null", column=column.name, mostly=0.95))
    return {
        "name": f"{name}_raw",
        "meta": {"notes": f"Drafted by `sluice init` from {profile.where()} ({profile.rows} rows): structure."},
        "expectations": expectations,
    }


def _range(column: ColumnProfile) -> tuple[float, float]:
    assert column.minimum is not None and column.maximum is not None
    low, high = column.minimum, column.maximum
    margin = RANGE_MARGIN * ((high - low) or abs(high) or 1.0)
    lower, upper = low - margin, high + margin
    if low >= 0 > lower:  # a column that never went negative (counts, amounts) should not start now
        lower = 0.0
    if column.kind == "integer":
        return float(math.floor(lower)), float(math.ceil(upper))
    return round(lower, 6), round(upper, 6)  # the margin dwarfs the rounding: the range still holds every value


def draft_clean_suite(cleaned: pd.DataFrame, roles: Roles, *, name: str, clean: dict[str, Any]) -> dict[str, Any]:
    """The gate on clean rows: unique ids, no new nulls, values in the sets, ranges and lengths seen.

    Row-level (quarantine the row, with the expectation as its reason) except the row count and the ids.
    """
    columns = profile_frame(cleaned)
    expectations = [
        _expectation("expect_table_row_count_to_be_between", min_value=min(MIN_CLEAN_ROWS, len(cleaned))),
        _expectation("expect_column_values_to_be_unique", column=ITEM_ID),
    ]
    for unique in [roles.id if roles.id != ITEM_ID else None, *clean.get("dedupe_on", [])]:
        if unique:
            expectations.append(_expectation("expect_column_values_to_be_unique", column=unique))
    free = {roles.text, roles.group, roles.time, roles.id, roles.image}
    for column in columns.values():
        if column.nulls == 0 and column.name != roles.label:  # an unlabelled row waits for its label
            expectations.append(
                _expectation(
                    "expect_column_values_to_not_be_null",
                    column=column.name,
                    row_level=True,
                    why="the profiled data had no missing values here",
                )
            )
        if column.values is not None and (column.name == roles.label or column.name not in free):
            expectations.append(
                _expectation(
                    "expect_column_values_to_be_in_set",
                    column=column.name,
                    value_set=list(column.values),
                    row_level=True,
                    why="values outside the set seen when the suite was drafted",
                )
            )
        elif column.kind in ("integer", "float") and column.name not in free and column.minimum is not None:
            low, high = _range(column)
            expectations.append(
                _expectation(
                    "expect_column_values_to_be_between",
                    column=column.name,
                    min_value=low,
                    max_value=high,
                    row_level=True,
                    why=f"observed {column.minimum:g} to {column.maximum:g}, plus a {RANGE_MARGIN:.0%} margin",
                )
            )
    expectations += _input_expectations(columns, roles)
    return {
        "name": f"{name}_clean",
        "meta": {"notes": "Drafted by `sluice init`: the gate before labels and training."},
        "expectations": expectations,
    }


def _input_expectations(columns: dict[str, ColumnProfile], roles: Roles) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    text = columns.get(roles.text or "")
    if text is not None and text.min_length is not None and text.max_length is not None:
        found.append(
            _expectation(
                "expect_column_value_lengths_to_be_between",
                column=text.name,
                min_value=max(1, text.min_length // 2),
                max_value=text.max_length * 2,
                row_level=True,
                why=f"texts were {text.min_length} to {text.max_length} characters long",
            )
        )
    image = columns.get(roles.image or "")
    if image is not None and image.kind == "text":
        found.append(
            _expectation(
                "expect_column_values_to_match_regex",
                column=image.name,
                regex=_IMAGE_SUFFIX,
                row_level=True,
                why="image cells name image files",
            )
        )
    return found


# --- what init says ---------------------------------------------------------------------------------------
def _inferred(profile: DataProfile, roles: Roles, config: dict[str, Any], classes: dict[str, int]) -> list[str]:
    train, split = config["train"], config["split"]
    lines = [
        f"Drafted by `sluice init` from {profile.where()}: {profile.rows:,} rows, {len(profile.columns)} columns"
        + (f", {profile.malformed} malformed lines" if profile.malformed else "")
        + ".",
        f"labels: from {roles.labels_from} {roles.label}; classes {describe_classes(classes)}",
        f"train: task {train['task']}, architecture {train['architecture']} (from the column roles)",
        f"split: {split['strategy']}"
        + (f" on {roles.time}" if roles.time else f" by {roles.group}" if roles.group else " on the label")
        + " (temporal with --time, group with --group, else stratified)",
    ]
    if roles.task == "tabular":
        lines.append(f"features: {', '.join(roles.features)}")
    lines.append(
        f"promotion floor: accuracy {config['registry']['promotion']['floors']['accuracy']} (the majority class)"
    )
    return lines


def describe_profile(profile: DataProfile, roles: Roles) -> list[str]:
    """One line per column: kind, nulls, distinct values, range or lengths, and its role."""
    role_of = {column: option.split()[0].lstrip("-") for option, column in roles.named().items()}
    width = max(len(c) for c in profile.columns)
    lines = []
    for column in profile.columns.values():
        if column.minimum is not None:
            spread = f"{column.minimum:g} to {column.maximum:g}"
        elif column.min_length is not None:
            spread = f"{column.min_length}-{column.max_length} chars"
        else:
            spread = ""
        role = role_of.get(column.name, "")
        lines.append(
            f"{column.name:<{width}}  {column.kind:<8} {column.nulls:>6} null {column.distinct:>7} distinct  "
            f"{spread:<22} {role}".rstrip()
        )
    return lines


# --- writing ----------------------------------------------------------------------------------------------
def write_draft(draft: Draft, root: Path, *, force: bool = False) -> list[Path]:
    """Write the draft's files under `root`; existing files only with `force`.

    Raises:
        ProfileError: a file exists and `force` is off (nothing is written then).
    """
    files = draft.files(root)
    existing = [p for p in files if p.exists()]
    if existing and not force:
        names = [str(p.relative_to(root)) for p in existing]
        listing = (
            f"{', '.join(names[:-1])} and {names[-1]} already exist" if names[1:] else f"{names[0]} already exists"
        )
        raise ProfileError(f"{listing} under {root}; pass --force to overwrite them, or pick another --name.")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)


def source_path_for(data: str, *, root: Path, home: Path) -> str:
    """`source.path` for the data: `{home}/…` inside the project home, relative inside the root, else absolute."""
    absolute = Path(os.path.abspath(os.path.expanduser(data)))  # abspath, not resolve: a glob stays a glob
    for base, prefix in ((home, "{home}/"), (root, "")):
        try:
            return prefix + str(absolute.relative_to(os.path.abspath(base)))
        except ValueError:
            continue
    return str(absolute)


def describe_classes(classes: dict[str, int], limit: int = 12) -> str:
    """Classes with their row counts, the first `limit` of them."""
    shown = [f"{k} ({v:,})" for k, v in list(classes.items())[:limit]]
    return ", ".join(shown) + (f", … ({len(classes)} classes)" if len(classes) > limit else "")
