"""The NGC API key never appears in logs, the DB, the store, or error messages."""

from __future__ import annotations

from pathlib import Path

from mirror.fakengc import FakeNGC, Fault, seed_catalog
from tests.conftest import cli_env, run_mirror, write_config

KEY = "NGCKEY-sekrit-7f3a9c2e11d04b8f"


def _grep_tree(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_api_key_used_but_never_leaked(home: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "m.toml")
    with FakeNGC(seed_catalog(limit=3), api_key=KEY) as fake:
        env = cli_env(home, fake.url, NGC_API_KEY=KEY)
        proc = run_mirror(["--config", str(cfg), "-vv", "sync"], env)
        assert proc.returncode == 0, proc.stderr
        # key mode was really used: token exchange, then key-mode paths with a bearer token
        assert fake.count(r"^/token") >= 1
        keyed = [r for r in fake.requests if r.path.startswith("/v2/org/")]
        assert keyed and all(
            r.headers.get("authorization", "").startswith("Bearer ") for r in keyed
        )
        # and never sent to presigned download URLs
        assert all(
            "authorization" not in r.headers for r in fake.requests if r.path.startswith("/_dl/")
        )
        fake.add_fault(Fault(r"^/v2/search/", status=500, times=None))
        failed = run_mirror(["--config", str(cfg), "-vv", "sync"], env)
        assert failed.returncode == 3
        status = run_mirror(["status", "--json"], env)
    for text in (proc.stdout, proc.stderr, failed.stdout, failed.stderr, status.stdout):
        assert KEY not in text
    assert _grep_tree(home, KEY.encode()) == []


def test_wrong_key_error_does_not_echo_it(home: Path) -> None:
    with FakeNGC(seed_catalog(limit=2), api_key=KEY) as fake:
        env = cli_env(home, fake.url, NGC_API_KEY="wrong-" + KEY)
        proc = run_mirror(["sync"], env)
    assert proc.returncode == 3
    assert "rejected the API key" in proc.stderr
    assert KEY not in proc.stderr and "wrong-" not in proc.stderr
    assert _grep_tree(home, KEY.encode()) == []
