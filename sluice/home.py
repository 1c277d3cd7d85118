"""The project home: every piece of local state lives under one folder.

`.sluice/` in the current directory by default; `SLUICE_HOME` moves it.
Nothing here touches the disk at import time: paths are computed, folders are
made by whoever writes into them.

The one place where the services' databases are configured: Prefect's server, MLflow's tracking
store and Label Studio keep SQLite under the home unless `$SLUICE_<SERVICE>_DATABASE_URL` names a
PostgreSQL database (`DATABASE_URL_ENV`). A URL names its password as `${VAR}`, never holds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tasks.db_urls import UrlError, check_no_password, expand_url, is_postgresql

DatabaseService = Literal["prefect", "mlflow", "labelstudio"]
DATABASE_URL_ENV: dict[DatabaseService, str] = {
    "prefect": "SLUICE_PREFECT_DATABASE_URL",
    "mlflow": "SLUICE_MLFLOW_DATABASE_URL",
    "labelstudio": "SLUICE_LABELSTUDIO_DATABASE_URL",
}
"""Where each service's PostgreSQL URL comes from, e.g. `postgresql://sluice:${PGPASSWORD}@db:5432/mlflow`."""


class BackendError(ValueError):
    """A service database URL is unusable; the message names the variable and the fix."""


@dataclass(frozen=True)
class Home:
    """Paths of the project home (`.sluice/` unless `SLUICE_HOME` says otherwise)."""

    root: Path

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None = None) -> Home:
        """The home at `root`, else `$SLUICE_HOME`, else `./.sluice`."""
        chosen = root or os.environ.get("SLUICE_HOME") or ".sluice"
        return cls(Path(chosen).expanduser().resolve())

    # -- data ---------------------------------------------------------------
    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def clean(self) -> Path:
        return self.root / "clean"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def checkpoints(self) -> Path:
        """Training checkpoints by input key: a rerun of the same inputs resumes where the last one stopped."""
        return self.root / "checkpoints"

    @property
    def runs(self) -> Path:
        """Per-run outputs: reports, checkpoints, plots, models kept locally."""
        return self.root / "runs"

    # -- services -----------------------------------------------------------
    @property
    def prefect(self) -> Path:
        return self.root / "prefect"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        """The MLflow store: the configured PostgreSQL database (`${VAR}`s unexpanded), else SQLite here."""
        return self.database_url("mlflow") or f"sqlite:///{self.mlflow / 'mlflow.db'}"

    def database_url(self, service: DatabaseService) -> str | None:
        """A service's PostgreSQL URL as configured (`${VAR}`s unexpanded); None: SQLite under the home.

        Raises:
            BackendError: the URL is not PostgreSQL or holds its password.
        """
        name = DATABASE_URL_ENV[service]
        url = os.environ.get(name, "").strip()
        if not url:
            return None
        if not is_postgresql(url):
            raise BackendError(
                f"${name} must be a PostgreSQL URL (postgresql://user:${{PASSWORD_VAR}}@host:5432/database); "
                f"unset it to keep {service} on SQLite under the home."
            )
        try:
            check_no_password(url, where=f"${name}")
        except UrlError as exc:
            raise BackendError(str(exc)) from None
        return url

    def check_databases(self) -> None:
        """Each configured service URL is PostgreSQL, names its password, and its `${VAR}`s are set.

        Raises:
            BackendError: the first URL that cannot work, named with the fix.
        """
        for service, name in DATABASE_URL_ENV.items():
            url = self.database_url(service)
            try:
                expand_url(url or "", where=f"${name}")
            except UrlError as exc:
                raise BackendError(str(exc)) from None

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow / "artifacts"

    @property
    def gx(self) -> Path:
        return self.root / "gx"

    @property
    def labelstudio(self) -> Path:
        return self.root / "labelstudio"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def service_env(self) -> dict[str, str]:
        """Environment that keeps Prefect, MLflow and friends inside the home, not `$HOME`."""
        return {
            "SLUICE_HOME": str(self.root),
            "PREFECT_HOME": str(self.prefect),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.prefect / 'prefect.db'}",
            "PREFECT_LOCAL_STORAGE_PATH": str(self.prefect / "storage"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true",
            "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", self.mlflow_tracking_uri),
            "GIT_PYTHON_REFRESH": "quiet",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "MPLCONFIGDIR": str(self.root / "matplotlib"),
            # Libraries that write under $HOME (MLflow's telemetry id, onnxruntime's cache) follow XDG.
            "XDG_CACHE_HOME": str(self.root / "cache"),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "XDG_DATA_HOME": str(self.root / "data"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "GX_ANALYTICS_ENABLED": "false",
        }
