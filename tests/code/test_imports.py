"""What a CLI start pays before it does anything: reading a config must not import cleanlab or scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_loading_a_config_imports_neither_cleanlab_nor_sklearn() -> None:
    # A fresh interpreter: this test process has imported everything already.
    probe = (
        "import json, sys; import sluice.config; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'cleanlab', 'sklearn', 'datasets'})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
