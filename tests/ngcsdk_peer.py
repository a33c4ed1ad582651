"""NVIDIA's NGC SDK as a test client: how to run tests/ngcsdk_driver.py against a server."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DRIVER = Path(__file__).resolve().parent / "ngcsdk_driver.py"


def require_ngcsdk() -> None:
    if importlib.util.find_spec("ngcsdk") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ngcsdk is required in CI but not installed (see .ci/run)")
        pytest.skip("ngcsdk not installed")


def sdk_env(url: str, home: Path, ca: Path, api_key: str | None = None) -> dict[str, str]:
    """Environment of a driver subprocess: loopback server, own NGC_CLI_HOME, no way out."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NGC_", "MIRROR_"))
        and not k.lower().endswith("_proxy")
        and k not in ("CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
    }
    env.update(
        {
            "NGC_CLI_API_URL": url,
            "NGC_CLI_HOME": str(home),
            "REQUESTS_CA_BUNDLE": str(ca),
            "HOME": str(home),
            "PYTHONUNBUFFERED": "1",
            "NGC_CLI_MAX_CONCURRENCY": "2",
        }
    )
    env["NO_PROXY"] = env["no_proxy"] = "*"
    if api_key is not None:
        env.update({"NGC_CLI_API_KEY": api_key, "NGC_CLI_ORG": "nvidia", "NGC_CLI_AUTH_URL": url})
    return env


def rid_of(doc: dict[str, Any]) -> str:
    return "/".join(p for p in (doc.get("orgName"), doc.get("teamName"), doc["name"]) if p)


def run_sdk(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """One driver op in a subprocess; with ok (the default), require exit status 0."""
    proc = subprocess.run(
        [sys.executable, str(DRIVER), *args], env=env, capture_output=True, text=True, timeout=120
    )
    if ok:
        assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stderr}"
    return proc
