"""The command line: help for every command, README coverage, usage errors, status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.main import get_command

from mirror.cli import app
from tests.conftest import REPO, cli_env, run_mirror

COMMANDS = [
    "sync",
    "status",
    "verify",
    "gc",
    "prune",
    "demo",
    "search",
    "show",
    "index rebuild",
    "export",
    "import",
    "bundle inspect",
    "keys generate",
    "serve",
    "db upgrade",
]


def test_every_command_is_in_the_readme_and_has_help() -> None:
    readme = (REPO / "README.md").read_text()
    group = get_command(app)
    names = set(group.commands)  # type: ignore[attr-defined]
    assert names == {c.split()[0] for c in COMMANDS}
    for c in COMMANDS:
        assert f"mirror {c}" in readme, f"`mirror {c}` missing from README"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help(cmd: str) -> None:
    proc = run_mirror([*cmd.split(), "--help"], {"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and "Usage" in proc.stdout


def test_usage_error_exits_2(home: Path) -> None:
    proc = run_mirror(["sync", "--no-such-flag"], cli_env(home, "http://127.0.0.1:9"))
    assert proc.returncode == 2


def test_config_error_exits_2_naming_the_key(home: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[ngc]\napi_uri = 'x'\n")
    proc = run_mirror(["--config", str(cfg), "sync"], cli_env(home, "http://127.0.0.1:9"))
    assert proc.returncode == 2 and "[ngc].api_uri" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_upstream_exits_3(home: Path) -> None:
    proc = run_mirror(["sync"], cli_env(home, "http://127.0.0.1:9"))
    assert proc.returncode == 3 and "cannot reach upstream" in proc.stderr


def test_status_on_an_empty_mirror(home: Path) -> None:
    proc = run_mirror(["status", "--json"], cli_env(home, "http://127.0.0.1:9"))
    assert proc.returncode == 0 and json.loads(proc.stdout)["runs"] == []


def test_db_upgrade_creates_the_schema(home: Path) -> None:
    env = cli_env(home, "http://127.0.0.1:9")
    first = run_mirror(["db", "upgrade"], env)
    assert first.returncode == 0 and "upgraded to" in first.stdout
    second = run_mirror(["db", "upgrade"], env)
    assert "already at" in second.stdout


def test_demo_runs_offline(tmp_path: Path) -> None:
    proc = run_mirror(
        ["demo", "--dir", str(tmp_path / "d")], cli_env(tmp_path, "http://127.0.0.1:9"), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "second sync: " in proc.stdout and "0 files fetched" in proc.stdout
    assert "clean" in proc.stdout
