"""Secrets (the Label Studio token, database passwords): from the environment or a Prefect Secret block.

A secret is looked up when it is needed and handed straight to the client that uses it. It is never a
flow or task parameter, an MLflow param or tag, an artifact or a log line: parameters and tags are
stored in plain text in the Prefect and MLflow databases. Pass the name of a secret around, not its value.

Order: the environment variables, first one set wins (a developer's shell or a worker's environment),
then the Prefect Secret block of that name (`sluice secret set NAME`, or the Prefect UI: Blocks >
Secret), which a deployment's worker reads from the Prefect server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

LABEL_STUDIO_TOKEN = "sluice-labelstudio-token"
"""Prefect Secret block holding the Label Studio API token."""
LABEL_STUDIO_TOKEN_ENV = ("SLUICE_LABEL_STUDIO_TOKEN", "LABEL_STUDIO_API_KEY")


class SecretError(RuntimeError):
    """A secret could not be stored; the message says where to set it instead. Never holds the value."""


def _prefect_api_configured() -> bool:
    """True when a Prefect API is set: without one, loading a block would start a throwaway server (~20 s)."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def resolve_secret(name: str, env_vars: Sequence[str] = ()) -> str | None:
    """The secret's value from the first set environment variable, else the Prefect Secret block `name`.

    Returns None when neither has it (the caller says what to set). The block is only asked for when a
    Prefect API is configured (`PREFECT_API_URL`, or inside a flow run).
    """
    for var in env_vars:
        value = os.environ.get(var, "").strip()
        if value:
            return value
    if not _prefect_api_configured():
        return None
    from prefect.blocks.system import Secret

    try:
        block: Any = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError:  # no block of that name
        return None
    value = block.get()
    return str(value) if value else None


def store_secret(name: str, value: str) -> None:
    """Save (or overwrite) the Prefect Secret block `name` on the configured Prefect server.

    Raises:
        SecretError: no Prefect API is configured, or the value is empty.
    """
    if not value.strip():
        raise SecretError(f"refusing to store an empty value in the Prefect Secret block {name!r}")
    if not _prefect_api_configured():
        raise SecretError(
            f"no Prefect API to store the Secret block {name!r} in; start one with `sluice serve` "
            "(or set PREFECT_API_URL), or export the secret as an environment variable instead"
        )
    from prefect.blocks.system import Secret

    Secret(value=value.strip()).save(name, overwrite=True, _sync=True)  # type: ignore[call-arg]
