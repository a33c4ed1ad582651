"""`mirror serve` keeps answering while a sync and an import change the root under it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import quote

import httpx

from mirror.fakengc import FakeEntry, FakeFile, FakeNGC, FakeVersion, seed_catalog
from mirror.sync import run_sync
from tests.conftest import cli_env, make_settings, run_mirror
from tests.serve_peer import ServeThread


class Hammer(threading.Thread):
    """Requests `paths` in a loop until stopped; records every status and any exception."""

    def __init__(self, base: str, paths: list[str]) -> None:
        super().__init__(daemon=True)
        self.base, self.paths = base, paths
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as c:
            while not self.stop.is_set():
                for p in self.paths:
                    try:
                        self.statuses.append(c.get(p).status_code)
                    except httpx.HTTPError as exc:
                        self.errors.append(f"{p}: {exc!r}")


def _paths(entry_path: str, base: str) -> list[str]:
    return [
        f"{base}/versions",
        "/v2/search/catalog/resources/MODEL?q=%7B%7D",
        "/v2/_catalog",
        "/search?q=bert",
        f"/entry/model/{entry_path}",
    ]


def test_serving_continues_during_sync_and_import(tmp_path: Path) -> None:
    home, other = tmp_path / "mirror", tmp_path / "other"
    cat = seed_catalog(limit=6)
    entry = cat.of_kind("model")[0]
    base = f"/v2/models/{entry.org}/{entry.name}"
    with FakeNGC(cat) as fake:
        settings = make_settings(home, fake.url, kinds=("model", "resource"))
        env = cli_env(home, fake.url)
        assert run_sync(settings).outcome == "ok"
        # the far side starts from a first bundle
        assert run_mirror(["export", str(tmp_path / "b1")], env).returncode == 0
        far = {**env, "MIRROR_HOME": str(other)}
        assert run_mirror(["import", str(tmp_path / "b1")], far).returncode == 0
        with ServeThread(home) as near_srv, ServeThread(other) as far_srv:
            hammers = [Hammer(near_srv.url, _paths(entry.resource_id, base))]
            hammers.append(Hammer(far_srv.url, _paths(entry.resource_id, base)))
            for h in hammers:
                h.start()
            # upstream publishes a new version with a big file; the sync writes DB, store,
            # index.json and the search index while requests keep coming
            cat.add_version(
                entry,
                FakeVersion(
                    "9.0",
                    created="2031-01-01T00:00:00.000Z",
                    files=[FakeFile("big.bin", content=bytes(range(256)) * 40_000)],
                ),
            )
            fresh = "/v2/search/catalog/resources/MODEL?q=" + quote(
                json.dumps({"query": "resourceId:nvidia/fresh*", "pageSize": 10})
            )
            with httpx.Client(base_url=near_srv.url, timeout=30) as c:
                assert c.get(fresh).json()["results"] == []
            cat.add(FakeEntry(kind="model", org="nvidia", team=None, name="fresh_model"))
            assert run_sync(settings).outcome == "ok"
            # the same query sees the new entry
            with httpx.Client(base_url=near_srv.url, timeout=30) as c:
                (group,) = c.get(fresh).json()["results"]
                assert [r["resourceId"] for r in group["resources"]] == ["nvidia/fresh_model"]
            # ... and the far side imports it while serving
            assert run_mirror(["export", str(tmp_path / "b2")], env).returncode == 0
            imported = run_mirror(["import", str(tmp_path / "b2")], far)
            assert imported.returncode == 0, imported.stderr
            for h in hammers:
                h.stop.set()
                h.join(timeout=30)
            for srv in (near_srv, far_srv):
                with httpx.Client(base_url=srv.url, timeout=30) as c:
                    versions = c.get(f"{base}/versions").json()["modelVersions"]
                    status = {v["versionId"]: v["status"] for v in versions}
                    assert status.get("9.0") == "UPLOAD_COMPLETE", srv.url
                    assert "9.0" in c.get(f"/entry/model/{entry.resource_id}").text
    for h in hammers:
        assert not h.errors, h.errors[:5]
        assert len(h.statuses) > 10
        assert set(h.statuses) <= {200}, sorted(set(h.statuses))
