"""Human approval in the Prefect UI: the flow run pauses after registration until a reviewer decides.

With `registry.promotion.approval: manual`, a version that passed every gate is registered as
`challenger` and the flow run pauses with `pause_flow_run(wait_for_input=ReviewDecision)`. The
Prefect UI shows the pause's description (the model card summary and the gate results) and a
*Resume* form; the answer lands on the version as aliases and `sluice.review.*` tags. A run that
nobody resumes within `approval_timeout` seconds goes on, and the version stays challenger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from prefect import get_client, get_run_logger, runtime, task
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Running
from pydantic import Field

from flows.steps import publish
from sluice import tracking
from sluice.config import PipelineConfig

POLL_SECONDS = 2
"""How often the paused run asks the Prefect API whether it was resumed."""


class ReviewDecision(RunInput):
    """The reviewer's answer, as the Prefect UI's resume form asks for it."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: the version becomes champion; reject: its aliases are taken away"
    )
    reason: str = Field(min_length=1, description="why, in plain words (stored as the tag sluice.review.reason)")
    reviewer: str = Field(min_length=1, description="who decides (stored as the tag sluice.review.by)")


@dataclass
class ReviewOutcome:
    status: Literal["approved", "rejected", "timed out"]
    reviewer: str | None
    reason: str
    at: str
    aliases: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.status == "timed out":
            return f"every gate passed; {self.reason}"
        verb = "approved" if self.status == "approved" else "rejected"
        return f"{verb} by {self.reviewer} ({self.reason})"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def request_review(
    config: PipelineConfig, tracking_uri: str, version: tracking.RegisteredVersion, summary: str
) -> ReviewOutcome:
    """Pause the flow run until a reviewer approves or rejects `version` in the Prefect UI, then record it.

    Needs an orchestrated flow run (a Prefect server); `.fn()` cannot pause.
    """
    promotion = config.registry.promotion
    publish(f"{config.name}-review", summary, f"{version.model_name} v{version.version}: waiting for a reviewer")
    url = runtime.flow_run.ui_url or "the Prefect UI (`sluice ui`)"
    # A warning, so that it shows in the terminal of `sluice run` whatever the console log level.
    get_run_logger().warning(
        "%s version %s passed every gate and waits for a reviewer (registry.promotion.approval: manual). "
        "Approve or reject it with the Resume button of %s; this run waits up to %d s. Ctrl-C stops waiting: "
        "the version stays challenger, and `sluice promote` / `sluice reject` decide later.",
        version.model_name,
        version.version,
        url,
        promotion.approval_timeout,
    )
    try:
        answer = pause_flow_run(
            wait_for_input=ReviewDecision.with_initial_data(description=summary),
            timeout=promotion.approval_timeout,
            poll_interval=POLL_SECONDS,
        )
    except FlowPauseTimeout:
        # The server keeps a run it paused Paused, and a paused run may neither start tasks nor complete:
        # put it back to Running so it can record the timeout and finish.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(runtime.flow_run.id, Running(), force=True)
        return record_timeout(config, tracking_uri, version)
    return apply_review(config, tracking_uri, version, answer)


@task(name="apply-review", retries=2, retry_delay_seconds=[2, 10])
def apply_review(
    config: PipelineConfig, tracking_uri: str, version: tracking.RegisteredVersion, answer: ReviewDecision
) -> ReviewOutcome:
    """The reviewer's decision on the version: `champion` moves here, or its aliases go."""
    tracking.configure_tracking(tracking_uri)
    at = _now()
    aliases = tracking.review_version(
        version.model_name,
        version.version,
        action="promote" if answer.decision == "approve" else "reject",
        reviewer=answer.reviewer,
        reason=answer.reason,
        at=at,
    )
    status: Literal["approved", "rejected"] = "approved" if answer.decision == "approve" else "rejected"
    get_run_logger().info("%s v%s %s by %s", version.model_name, version.version, status, answer.reviewer)
    return ReviewOutcome(status=status, reviewer=answer.reviewer, reason=answer.reason, at=at, aliases=aliases)


@task(name="review-timed-out", retries=2, retry_delay_seconds=[2, 10])
def record_timeout(config: PipelineConfig, tracking_uri: str, version: tracking.RegisteredVersion) -> ReviewOutcome:
    """No reviewer within the timeout: the version stays challenger, tagged so (a CLI review meanwhile stands)."""
    tracking.configure_tracking(tracking_uri)
    timeout = config.registry.promotion.approval_timeout
    reason = (
        f"no reviewer decided within {timeout} s: the version stays challenger "
        "(`sluice promote` / `sluice reject` decide later)"
    )
    at = _now()
    aliases = tracking.record_review_timeout(version.model_name, version.version, reason=reason, at=at)
    return ReviewOutcome(status="timed out", reviewer=None, reason=reason, at=at, aliases=aliases)
