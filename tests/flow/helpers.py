"""Helpers shared by the flow tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def serve_in_fresh_process(model_uri: str, tracking_uri: str, texts: list[str]) -> list[dict[str, Any]]:
    """Load a registered model with a plain MLflow client in a new Python process, and predict raw texts.

    The process starts outside the repository, so nothing of the training code path is importable
    except what the model itself carries.
    """
    script = (
        "import json, sys, mlflow, pandas as pd; "
        f"m = mlflow.pyfunc.load_model({model_uri!r}); "
        f"print(m.predict(pd.DataFrame({{'text': {texts!r}}})).to_json(orient='records'))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows
