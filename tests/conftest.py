"""Shared fixtures: a temporary mirror root, settings pointing at a fake NGC server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.config import HttpSettings, NgcSettings, Selection, Settings


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


def make_settings(home: Path, api_url: str, *, select: tuple[Selection, ...] | None = None,
                  api_key: str | None = None, concurrency: int = 4, retries: int = 3,
                  **ngc: object) -> Settings:
    from mirror.config import Secret

    return Settings(
        home=home,
        ngc=NgcSettings(api_url=api_url, auth_url=api_url,
                        api_key=Secret(api_key) if api_key else None, **ngc),  # type: ignore[arg-type]
        http=HttpSettings(retries=retries, backoff=0.01, max_backoff=0.05,
                          concurrency=concurrency, timeout=10.0),
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
