"""A generation run (train.task: generation) from split to registration, as plain functions.

`train_generator` fine-tunes, tests once (perplexity) and writes samples and the saved model;
`decide_generation` is the promotion gate (the perplexity ceiling, `generation.max_perplexity`);
`build_generation_registration` returns the report files, the model card and the record that
`sluice.tracking.log_training_run` turns into an MLflow run and a model version served by
`sluice/serving_generation.py`. Neither Prefect nor MLflow is imported here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from tasks.columns import SPLIT
from tasks.generation import (
    GenerationConfig,
    check_perplexity,
    fine_tune_lm,
    generate_texts,
    measure_perplexity,
    prepare_lm,
    save_lm,
)
from tasks.promotion import PromotionDecision
from tasks.registration import Registration, RunRecord

if TYPE_CHECKING:
    pass

GENERATOR_ARTIFACT = "generator"  # the saved model directory's name in the MLflow model's artifacts
_PROMPT_WORDS = 3  # a sample's prompt: the first words of a test text
_SAMPLES = 5


@dataclass
class GenerationResult:
    """A fine-tuned generator: where it is saved, its epochs, its test perplexity and samples."""

    model_dir: Path
    device: str
    history: list[dict[str, float]]
    test_perplexity: float
    prompts: list[str]
    samples: list[str]

    def samples_markdown(self) -> str:
        lines = ["| prompt | continuation |", "|---|---|"]
        cells = [(p, s) for p, s in zip(self.prompts, self.samples, strict=True)]
        lines += [f"| {_cell(p)} | {_cell(s)} |" for p, s in cells]
        return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip() or "(empty)"


def sample_prompts(test: pd.DataFrame, config: GenerationConfig, n: int = _SAMPLES) -> list[str]:
    """The first words of the first `n` test texts: prompts from text the model never trained on."""
    texts = [str(t) for t in test[config.text_column].dropna() if str(t).split()]
    return [" ".join(t.split()[:_PROMPT_WORDS]) for t in texts[:n]]


def train_generator(config: GenerationConfig, frames: dict[str, pd.DataFrame], model_dir: Path) -> GenerationResult:
    """Fine-tune on train (val perplexity per epoch), test perplexity once, samples, and save to `model_dir`."""
    lm = prepare_lm(config, frames["train"])
    tuned = fine_tune_lm(lm, frames["train"], frames["val"], config)
    prompts = sample_prompts(frames["test"], config)
    result = GenerationResult(
        model_dir=save_lm(lm, model_dir, config),
        device=str(lm.device),
        history=tuned.history,
        test_perplexity=measure_perplexity(lm, frames["test"], config, "test"),
        prompts=prompts,
        samples=generate_texts(lm, prompts, config),
    )
    return result


def decide_generation(
    config: GenerationConfig, result: GenerationResult, approval: Literal["auto", "manual"] = "auto"
) -> PromotionDecision:
    """The perplexity ceiling alone: the champion's perplexity was measured on its own test split, so
    comparing the two numbers would not be fair (the classifier's gate scores both on shared items)."""
    check = check_perplexity(result.test_perplexity, config)
    return PromotionDecision(promote=check.passed, checks=[check], approval=approval)


@dataclass(kw_only=True)
class GenerationRun(RunRecord):
    """Everything a generation run's registration records."""

    result: GenerationResult
    extra_tags: dict[str, str] = field(default_factory=dict)


def build_generation_card(run: GenerationRun) -> str:
    """The model card: model, data and split, expectations, test perplexity, samples, the promotion decision."""
    generation, split, result = run.config.generation or GenerationConfig(), run.split, run.result
    rows = run.account.to_dict()
    expectations = ", ".join(f"{o.suite}: {'passed' if o.success else 'FAILED'}" for o in run.suites) or "none"
    findings = [f"- {c.name}: {c.summary}" for c in run.leakage.checks if not c.skipped]
    return "\n".join(
        [
            f"# Model card: {run.config.registry.model_name}",
            "",
            f"A causal language model (`{generation.model}`) fine-tuned on the text column "
            f"`{generation.text_column}` of dataset `{run.config.name}` (train.task: generation; no labels).",
            "",
            "## Data",
            "",
            f"- snapshot: `{run.snapshot_id}`",
            f"- rows: {json.dumps(rows)}",
            f"- split: {split.settings.strategy}, sizes {split.sizes()}, manifest `{split.manifest_hash[:16]}`",
            f"- expectation suites: {expectations}",
            f"- leakage report: {'passed' if run.leakage.passed else 'FAILED'}",
            *findings,
            "",
            "## Training",
            "",
            f"- epochs: {generation.epochs}, lr {generation.lr:g}, batch size {generation.batch_size}, "
            f"block size {generation.block_size}, device {result.device}",
            *[f"- epoch {int(h['epoch'])}: val perplexity {h['val_perplexity']:.2f}" for h in result.history],
            "",
            "## Test",
            "",
            f"- test perplexity: **{result.test_perplexity:.2f}** (lower is better)",
            "",
            "## Samples",
            "",
            f"Continuations of the first words of test texts (temperature {generation.temperature:g}, "
            f"at most {generation.max_new_tokens} new tokens):",
            "",
            result.samples_markdown(),
            "",
            "## Promotion",
            "",
            run.decision.to_markdown(),
        ]
    )


def _tags(run: GenerationRun) -> dict[str, str]:
    suites = run.suites
    return {
        "sluice.dataset": run.config.name,
        "sluice.task": "generation",
        "sluice.snapshot_id": run.snapshot_id,
        "sluice.split_manifest_hash": run.split.manifest_hash,
        "sluice.split_sizes": ", ".join(f"{k}={v}" for k, v in run.split.sizes().items()),
        "sluice.split_assignment": run.assignment_path.stem,
        "sluice.expectations_success": str(all(o.success for o in suites)),
        "sluice.expectation_suites": ", ".join(o.suite for o in suites),
        "sluice.leakage_passed": str(run.leakage.passed),
        "sluice.labels_source": "none",
        "sluice.input_key": run.input_key,
        "sluice.git_commit": run.git_commit,
        "sluice.code_version": run.code_version,
        "sluice.device": run.result.device,
        "prefect.flow_run_id": run.flow_run_id,
        "prefect.flow_run_url": run.flow_run_url,
    } | run.extra_tags


def build_generation_registration(run: GenerationRun) -> Registration:
    """The report files, the model card and the MLflow record of a finished generation run."""
    card = build_generation_card(run)
    result, frames = run.result, run.split.frames()
    reports = {
        "leakage_report.md": run.leakage.to_markdown(),
        "leakage_report.json": json.dumps(run.leakage.to_dict(), indent=2),
        "expectations.json": json.dumps([o.to_dict() for o in run.suites], indent=2),
        "promotion.md": run.decision.to_markdown(),
        "samples.csv": pd.DataFrame({"prompt": result.prompts, "text": result.samples}).to_csv(index=False),
        "model_card.md": card,
    }
    tags = _tags(run)
    examples = pd.DataFrame({"prompt": result.prompts[:2] or ["the"]})
    record: dict[str, Any] = {
        "experiment": run.config.registry.experiment or run.config.name,
        "artifacts_dir": run.artifacts_dir,
        "run_name": f"{run.config.name}-{run.snapshot_id[:8]}",
        "params": run.config.flat_params(),
        "tags": tags,
        "history": result.history,
        "metrics": {"test_perplexity": result.test_perplexity},
        "datasets": {
            name: (frame.drop(columns=[SPLIT], errors="ignore"), str(run.snapshot_path), None)
            for name, frame in frames.items()
        },
        "artifacts": [run.reports_dir, run.split_dir, run.quarantine_path],
        "predictor_dir": result.model_dir,
        "input_example": examples,
        "output_example": examples.assign(text=result.samples[: len(examples)] or [""]),
        "model_name": run.config.registry.model_name,
        "version_tags": {k: v for k, v in tags.items() if k.startswith("sluice.")},
        "description": card,
        "promote": run.decision.promote and not run.decision.awaits_review,
        "decision_tags": run.decision.as_tags(),
        "registration_key": run.registration_key,
        "served_as": "generator",
    }
    return Registration(reports=reports, record=record)


def copy_generation_split_files(run: GenerationRun) -> Path:
    """This run's split manifest and the carried-forward assignment, as the version's `split/` artifacts."""
    folder = run.split_dir
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.split.manifest_path, folder / "manifest.parquet")
    shutil.copyfile(run.assignment_path, folder / "assignment.parquet")
    return folder
