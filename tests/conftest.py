"""Shared fixtures: a temporary mirror root, settings pointing at a fake NGC server."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from mirror.config import HttpSettings, NgcSettings, Selection, Settings

# A loaded CI machine can stall any example for longer than Hypothesis' 200 ms deadline; the
# properties are about results, not speed (speed is measured in bench/).
settings.register_profile(
    "mirror", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("mirror")


def pytest_configure(config: pytest.Config) -> None:
    """Proxy settings go before any fixture runs (module-scoped ones start servers and reach
    them on 127.0.0.1 before the per-test `_isolated_env` below)."""
    for key in list(os.environ):
        if key.lower().endswith("_proxy"):
            del os.environ[key]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's MIRROR_*/NGC_* environment or proxy settings."""
    for key in list(os.environ):
        if key.startswith(("MIRROR_", "NGC_")) or key.lower().endswith("_proxy"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "mirror"


def make_settings(
    home: Path,
    api_url: str,
    *,
    select: tuple[Selection, ...] | None = None,
    api_key: str | None = None,
    concurrency: int = 4,
    retries: int = 3,
    **ngc: object,
) -> Settings:
    from mirror.config import Secret

    return Settings(
        home=home,
        ngc=NgcSettings(
            api_url=api_url, auth_url=api_url, api_key=Secret(api_key) if api_key else None, **ngc
        ),  # type: ignore[arg-type]
        http=HttpSettings(
            retries=retries, backoff=0.01, max_backoff=0.05, concurrency=concurrency, timeout=10.0
        ),
        select=(Selection(pattern="*", latest=1),) if select is None else select,
    )


def require_tool(name: str) -> str:
    """A peer binary: skipped locally if absent, a failure in CI (CI=true)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI but not installed (see .ci/run)")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture
def fake_ngc() -> Iterator[object]:
    from mirror.fakengc import FakeNGC, seed_catalog

    with FakeNGC(seed_catalog(limit=12)) as server:
        yield server


REPO = Path(__file__).resolve().parent.parent


def cli_env(home: Path, api_url: str, **extra: str) -> dict[str, str]:
    """Environment for a `mirror` subprocess pointed at a fake server."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MIRROR_", "NGC_")) and not k.lower().endswith("_proxy")
    }
    env.update(
        {
            "MIRROR_HOME": str(home),
            "MIRROR_NGC_API_URL": api_url,
            "MIRROR_NGC_AUTH_URL": api_url,
            "MIRROR_HTTP_BACKOFF": "0.01",
            "MIRROR_HTTP_MAX_BACKOFF": "0.05",
            "MIRROR_HTTP_RETRIES": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def write_config(path: Path, select: str = 'pattern = "*"\nlatest = 1\n') -> Path:
    path.write_text(f"[[select]]\n{select}")
    return path


def mirror_cmd(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "mirror", *args]


def run_mirror(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    import subprocess

    return subprocess.run(
        mirror_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def wait_for(cond: object, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll `cond()` until true; fail naming `what` after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


@contextlib.contextmanager
def tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs at `mnt` for full-disk tests (mounting needs root: CI runs as root;
    skipped elsewhere, a failure in CI)."""
    mnt.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        why = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why} (CI runs the full-disk tests as root)")
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs."""
    with tmpfs(tmp_path / "small", "6m") as mnt:
        yield mnt
