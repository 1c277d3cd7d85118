"""How sluice runs its local Label Studio server: the settings model, its secrets and their checks.

Kept apart from `sluice.labelstudio_server` (the process manager) so the pipeline config can
hold these settings without importing the code that starts and stops processes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from sluice.home import Home
from sluice.secrets import LABEL_STUDIO_TOKEN, resolve_secret

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN_ENV_VARS = ("SLUICE_LABEL_STUDIO_TOKEN", "LABEL_STUDIO_API_KEY")
VENV_ENV_VAR = "SLUICE_LABEL_STUDIO_VENV"
_TOKEN_RE = re.compile(r"^[0-9a-f]{40}$")


class LabelStudioServerError(RuntimeError):
    """The local Label Studio server could not be started, found or stopped."""


@dataclass(frozen=True)
class AdminCredentials:
    """The admin account of the local server: for the pipeline's owner, never for annotators."""

    username: str
    password: str = field(repr=False)
    password_file: Path | None


class LabelStudioSettings(BaseModel):
    """How to run the local Label Studio server; defaults keep everything on loopback."""

    host: str = "127.0.0.1"
    allow_remote: bool = Field(
        False,
        description="allow a non-loopback host (other machines reach the server): then put it behind TLS",
    )
    port: int | None = Field(None, description="None picks a free port at start")
    # Label Studio logs users in by email; the pipeline uses this admin through its token only.
    username: str = "admin@sluice.local"
    password: SecretStr | None = Field(
        None,
        description="admin password; else one generated per home and kept in <home>/labelstudio/admin_password "
        "(mode 0600, shown by `sluice labelstudio credentials`)",
    )
    token: SecretStr | None = Field(
        None,
        description="admin API token (40 hex); else $SLUICE_LABEL_STUDIO_TOKEN, $LABEL_STUDIO_API_KEY, "
        "else one generated and kept under the home",
    )
    venv: Path | None = Field(None, description="Label Studio's virtualenv; else $SLUICE_LABEL_STUDIO_VENV")
    data_dir: Path | None = Field(None, description="database and media; else <home>/labelstudio/data")
    task_lock_ttl: int = Field(
        900, ge=60, description="seconds a task served to an annotator stays reserved (Label Studio: 24 h)"
    )
    start_timeout_s: float = Field(240.0, gt=0, description="first start runs migrations: ~85 s on 2 cores")

    @field_validator("token")
    @classmethod
    def _token_is_hex40(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TOKEN_RE.match(value.get_secret_value()):
            raise ValueError("the Label Studio token must be 40 lowercase hex characters (secrets.token_hex(20))")
        return value

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> LabelStudioSettings:
        if not self.allow_remote and not _is_loopback(self.host):
            raise ValueError(
                f"labelstudio.host {self.host!r} is not a loopback address: other machines could reach Label "
                "Studio's logins over plain HTTP. Keep 127.0.0.1, or set labelstudio.allow_remote: true and put "
                "the server behind TLS (a reverse proxy that terminates HTTPS)"
            )
        return self

    def resolve_venv(self) -> Path:
        """The server's virtualenv: config, else $SLUICE_LABEL_STUDIO_VENV, else <repo>/.venv-labelstudio."""
        chosen = self.venv or os.environ.get(VENV_ENV_VAR) or REPO_ROOT / ".venv-labelstudio"
        return Path(chosen).expanduser().resolve()

    def resolve_data_dir(self, home: Home) -> Path:
        return Path(self.data_dir).expanduser().resolve() if self.data_dir else home.labelstudio / "data"

    def resolve_token(self, home: Home) -> str:
        """The admin token: config, else env, else the one kept in <home>/labelstudio/admin_token.

        A generated token is written once (mode 0600): Label Studio binds the token at the
        first init of a data dir and rejects any other one afterwards.
        """
        if self.token is not None:
            return self.token.get_secret_value()
        # The environment first, then the Prefect Secret block (sluice.secrets), then the home's own token.
        value = resolve_secret(LABEL_STUDIO_TOKEN, TOKEN_ENV_VARS)
        if value:
            if not _TOKEN_RE.match(value):
                raise LabelStudioServerError(
                    f"the Label Studio token (from ${' / $'.join(TOKEN_ENV_VARS)} or the Prefect Secret block "
                    f"{LABEL_STUDIO_TOKEN!r}) is not 40 lowercase hex characters; fix it, or unset it to let sluice "
                    "generate one (secrets.token_hex(20))"
                )
            return value
        token, _ = _read_or_create_secret(home.labelstudio / "admin_token", lambda: secrets.token_hex(20))
        return token

    def resolve_password(self, home: Home) -> str:
        """The admin password: config, else the one generated for this home (mode 0600, written once)."""
        return self.credentials(home).password

    def credentials(self, home: Home) -> AdminCredentials:
        """The admin's login, and the file that keeps the password when sluice generated it."""
        if self.password is not None:
            return AdminCredentials(self.username, self.password.get_secret_value(), None)
        path = home.labelstudio / "admin_password"
        password, _ = _read_or_create_secret(path, lambda: secrets.token_urlsafe(18))
        return AdminCredentials(self.username, password, path)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def _read_or_create_secret(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The secret kept in `path`, or a new one written there with mode 0600; (value, created)."""
    if path.is_file():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    try:
        # O_EXCL with the mode at creation: the file is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: theirs is the one
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value, True
