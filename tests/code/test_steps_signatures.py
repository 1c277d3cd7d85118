"""Each Prefect task in `flows/steps.py` receives its own config section(s), never the whole `PipelineConfig`."""

from __future__ import annotations

import inspect
import typing

from prefect import Task

from flows import steps
from sluice.config import PipelineConfig


def _tasks() -> dict[str, Task]:
    return {name: value for name, value in vars(steps).items() if isinstance(value, Task)}


def test_no_step_takes_the_whole_pipeline_config() -> None:
    tasks = _tasks()
    assert {"ingest", "validate_raw", "clean", "split", "register", "train"} <= set(tasks)
    offenders = [
        f"{name}({param})"
        for name, task in tasks.items()
        for param, hint in typing.get_type_hints(task.fn, vars(steps)).items()
        if param != "return" and PipelineConfig in {hint, *typing.get_args(hint)}
    ]
    assert not offenders, f"steps that take the whole PipelineConfig: {offenders}"


def test_the_check_sees_a_pipeline_config_parameter() -> None:
    def takes_config(config: PipelineConfig) -> None: ...

    hints = typing.get_type_hints(takes_config, vars(steps))
    assert hints["config"] is PipelineConfig
    assert inspect.signature(takes_config).parameters
