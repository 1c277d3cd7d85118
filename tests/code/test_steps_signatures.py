"""Each Prefect task in `flows/steps.py` receives its own config section(s), never the whole `PipelineConfig`."""

from __future__ import annotations

import typing

from prefect import Task, task

from flows import steps
from sluice.config import PipelineConfig


def _offenders(tasks: dict[str, Task]) -> list[str]:
    """`task(param)` for each parameter annotated `PipelineConfig` (alone or in a union)."""
    return [
        f"{name}({param})"
        for name, step in tasks.items()
        for param, hint in typing.get_type_hints(step.fn, vars(steps)).items()
        if param != "return" and PipelineConfig in {hint, *typing.get_args(hint)}
    ]


def test_no_step_takes_the_whole_pipeline_config() -> None:
    tasks = {name: value for name, value in vars(steps).items() if isinstance(value, Task)}
    assert {"ingest", "validate_raw", "clean", "split", "resolve_labels", "register", "train"} <= set(tasks)
    assert not _offenders(tasks), f"steps that take the whole PipelineConfig: {_offenders(tasks)}"


def test_the_check_finds_a_step_that_takes_it() -> None:
    @task
    def takes_config(config: PipelineConfig | None, rows: int) -> None: ...

    assert _offenders({"takes_config": takes_config}) == ["takes_config(config)"]
