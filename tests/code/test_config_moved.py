"""Settings that moved to their one home are still read from the old place, with a warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sluice.config import ConfigError, load_config, parse_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def _raw(**sections: Any) -> dict[str, Any]:
    return {
        "name": "reviews",
        "source": {"path": "reviews.csv"},
        "labels": {"source": "annotation", "classes": ["pos", "neg"]},
        "annotation": {"label_config": "label_config/sentiment.xml"},
        "registry": {"model_name": "m"},
    } | sections


def test_the_old_place_of_overlap_is_still_read(tmp_path: Path) -> None:
    raw = _raw(consensus={"overlap": 4, "min_votes": 2})
    with pytest.warns(FutureWarning, match=r"consensus\.overlap has moved to annotation\.overlap"):
        config = parse_config(raw, base_dir=tmp_path)
    assert config.annotation is not None and config.annotation.overlap == 4
    assert config.consensus.min_votes == 2


def test_a_moved_setting_given_twice_with_two_values_names_both(tmp_path: Path) -> None:
    raw = _raw(consensus={"overlap": 4})
    raw["annotation"] = {**raw["annotation"], "overlap": 2}
    with pytest.raises(ConfigError, match=r"consensus\.overlap is 4 but annotation\.overlap is 2"):
        parse_config(raw, base_dir=tmp_path)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_bundled_config_loads_without_a_warning(path: Path, recwarn: pytest.WarningsRecorder) -> None:
    load_config(path)
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
