"""The modalities sluice trains on, by name (`train.task`): text, tabular, image and audio.

A new kind of data is one module: subclass `Modality` (tasks/modalities/base.py), register an instance
with `register_modality`, and list the module in `_BUILT_IN` (or call `register_modality` from the module
that defines it, imported before the config is read).
"""

from __future__ import annotations

import importlib
from typing import Any

from tasks.modalities.base import (
    DuplicateSettings,
    Edges,
    FittedEncoder,
    Modality,
    Role,
    require_columns,
    role_columns,
)

__all__ = [
    "DuplicateSettings",
    "Edges",
    "FittedEncoder",
    "Modality",
    "Role",
    "all_role_columns",
    "get_modality",
    "modality_of_architecture",
    "modality_names",
    "register_modality",
    "registered_modalities",
    "require_columns",
    "resolve_architecture",
    "role_columns",
]

# Modules that register a built-in modality when imported, in registry order (the order of the
# role columns a predictor records and of the duplicate edges the split joins).
_BUILT_IN = (
    "tasks.modalities.text",
    "tasks.modalities.tabular",
    "tasks.modalities.image",
    "tasks.modalities.audio",
    "tasks.modalities.generation",
)
_REGISTRY: dict[str, Modality] = {}
_loaded = False


def register_modality(modality: Modality, *, replace: bool = False) -> Modality:
    """Add a modality under its `name`; returns it (so a module can write `TEXT = register_modality(...)`).

    Raises:
        ValueError: the name is taken (pass replace=True to swap it, e.g. in a test), or one of its
            architectures already belongs to another modality.
    """
    taken = _REGISTRY.get(modality.name)
    if taken is not None and not replace:
        raise ValueError(f"modality {modality.name!r} is already registered ({type(taken).__name__})")
    for other in _REGISTRY.values():
        shared = set(other.architectures) & set(modality.architectures)
        if other.name != modality.name and shared:
            raise ValueError(
                f"modality {modality.name!r} names architectures {sorted(shared)}, which modality "
                f"{other.name!r} already has; give them other names"
            )
    _REGISTRY[modality.name] = modality
    return modality


def _load_built_in() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILT_IN:
            importlib.import_module(module)


def registered_modalities() -> list[Modality]:
    """Every registered modality, in registration order."""
    _load_built_in()
    return list(_REGISTRY.values())


def modality_names() -> list[str]:
    """The registered names (the values `train.task` accepts)."""
    return [m.name for m in registered_modalities()]


def get_modality(name: str) -> Modality:
    """The modality registered as `name`.

    Raises:
        ValueError: no modality has that name; the message names `train.task` and the registered names.
    """
    _load_built_in()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"train.task is {name!r}, which is not a registered modality; registered: {modality_names()} "
            "(a new one is a module in tasks/modalities/ that calls register_modality)"
        ) from None


def modality_of_architecture(architecture: str) -> Modality:
    """The modality that trains `architecture`.

    Raises:
        ValueError: no registered modality has it (the message lists the valid names).
    """
    for modality in registered_modalities():
        if architecture in modality.architectures:
            return modality
    valid = sorted(a for m in registered_modalities() for a in m.architectures)
    raise ValueError(f"unknown architecture {architecture!r}; valid: {valid}")


def resolve_architecture(task: str, architecture: str) -> str:
    """The concrete architecture for a task ("auto" picks the modality's first).

    Raises:
        ValueError: unknown task, or an architecture that does not fit the task.
    """
    valid = get_modality(task).architectures
    if architecture == "auto":
        return valid[0]
    if architecture not in valid:
        raise ValueError(f"unknown architecture {architecture!r} for task {task!r}; valid: {['auto', *valid]}")
    return architecture


def all_role_columns(columns: object) -> dict[str, Any]:
    """Role keyword -> column of every registered modality's roles, from a `ColumnsConfig`."""
    return role_columns(registered_modalities(), columns)
