"""Secure defaults of the local Label Studio: a generated admin password kept 0600, loopback unless allowed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from sluice.cli import main
from sluice.config import ConfigError, parse_config
from sluice.home import Home
from sluice.labelstudio_server import LabelStudioSettings, server_env


def test_admin_password_is_generated_per_home_and_kept_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = Home(tmp_path / "one"), Home(tmp_path / "two")
    credentials = LabelStudioSettings().credentials(first)
    assert credentials.password_file == first.labelstudio / "admin_password"
    assert stat.S_IMODE(credentials.password_file.stat().st_mode) == 0o600
    assert len(credentials.password) >= 20
    assert LabelStudioSettings().resolve_password(first) == credentials.password  # kept, not made again
    assert LabelStudioSettings().resolve_password(second) != credentials.password  # each home its own
    assert credentials.password not in repr(credentials)
    for module in ("labelstudio_server.py", "labelstudio_settings.py"):
        assert "sluice-local-admin" not in (Path(__file__).parents[2] / "sluice" / module).read_text()

    assert main(["--home", str(first.root), "labelstudio", "credentials"]) == 0
    out = capsys.readouterr().out
    assert credentials.password in out and "not for labelling" in out and "0600" in out


def test_the_server_binds_to_loopback_unless_remote_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a loopback address.*allow_remote: true.*TLS"):
        LabelStudioSettings(host="0.0.0.0")
    assert LabelStudioSettings(host="localhost").host == "localhost"
    assert LabelStudioSettings(host="0.0.0.0", allow_remote=True).allow_remote
    raw = {
        "name": "x",
        "source": {"path": "data.csv"},
        "labels": {"classes": ["a", "b"], "column": "label"},
        "registry": {"model_name": "m"},
        "labelstudio": {"host": "192.168.1.20"},
    }
    with pytest.raises(ConfigError, match="labelstudio: Value error, labelstudio.host '192.168.1.20'"):
        parse_config(raw, base_dir=tmp_path)


def test_loopback_server_answers_loopback_host_names_only(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    settings = LabelStudioSettings(token="ab" * 20)
    env = server_env(settings, home, port=8080, data_dir=tmp_path / "data")
    assert env["LABEL_STUDIO_ALLOWED_HOSTS"].split(",") == ["127.0.0.1", "localhost", "[::1]"]
    assert env["LABEL_STUDIO_PASSWORD"] == settings.resolve_password(home)
    remote = server_env(settings.model_copy(update={"allow_remote": True}), home, port=8080, data_dir=tmp_path)
    assert "LABEL_STUDIO_ALLOWED_HOSTS" not in remote  # behind a proxy: its own host names
