"""`mirror sync` of `[[registry]]` images through a fault-injecting proxy, and against a
registry whose storage lost a layer: what is reported, what is stored, what is published.

Fixture images (pushed once per module, into a plain and a token-auth docker-registry):
- test/app:v1 and test/app:v2 share a base layer; each has its own top layer;
- test/other:1.0 is unrelated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool, run_mirror
from tests.registry_peer import (
    NGC_KEY,
    NGC_USER,
    FaultProxy,
    Layout,
    Registry,
    TokenServer,
    TokenSigner,
)
from tests.test_image_support import (
    Blob,
    add_image,
    env_for,
    index_refs,
    partials,
    push,
    registry_config,
    stored,
    tar_layer,
    verify_clean,
)

REPOS = ["test/app", "test/other"]
NAME = "mirror.test"  # the reference prefix: fixed, so refs survive a new proxy port
ALL = {f"{NAME}/test/app:v1", f"{NAME}/test/app:v2", f"{NAME}/test/other:1.0"}


@dataclass
class Peers:
    layout: Layout
    plain: Registry
    tok: Registry
    tokens: TokenServer
    base: Blob
    top1: Blob
    top2: Blob
    work: Path
    skopeo_home: Path


def _layout(root: Path) -> tuple[Layout, Blob, Blob, Blob]:
    layout = Layout(root)
    base = tar_layer("base.bin", bytes(range(256)) * 2000)
    top1 = tar_layer("v1.bin", b"one" * 70_000)
    top2 = tar_layer("v2.bin", b"two" * 90_000)
    other = tar_layer("other.bin", b"other" * 10_000)
    layout.tags["v1"] = add_image(layout, [base, top1], created="2026-01-01T00:00:00Z")
    layout.tags["v2"] = add_image(layout, [base, top2], created="2026-02-01T00:00:00Z")
    layout.tags["other"] = add_image(layout, [other], created="2026-01-15T00:00:00Z")
    layout.write_index()
    return layout, base, top1, top2


def _push_all(layout: Layout, reg: Registry, home: Path, creds: str | None = None) -> None:
    for tag in ("v1", "v2"):
        push(layout, tag, reg.host, "test/app", tag, home=home, creds=creds)
    push(layout, "other", reg.host, "test/other", "1.0", home=home, creds=creds)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    require_tool("docker-registry")
    require_tool("skopeo")
    work = tmp_path_factory.mktemp("imgfaults")
    skopeo_home = work / "skopeo-home"
    layout, base, top1, top2 = _layout(work / "layout")
    signer = TokenSigner(work)
    with (
        TokenServer(signer) as tokens,
        Registry(work / "plain") as plain,
        Registry(
            work / "tok", auth="token", token_realm=tokens.realm, cert=signer.cert_path
        ) as tok,
    ):
        _push_all(layout, plain, skopeo_home)
        _push_all(layout, tok, skopeo_home, f"{NGC_USER}:{NGC_KEY}")
        yield Peers(layout, plain, tok, tokens, base, top1, top2, work, skopeo_home)


class TargetedProxy(FaultProxy):
    """A FaultProxy whose blob faults hit only the blob named `target`: its requests are of
    kind "target", so `plan("target", ...)` queues faults for that one digest."""

    target = ""

    def kind(self, path: str) -> str:  # type: ignore[override]
        if self.target and path.split("?", 1)[0].endswith(f"/blobs/{self.target}"):
            return "target"
        return FaultProxy.kind(path)


def _sync(cfg: Path, home: Path, **env: str) -> tuple[int, dict[str, object], str]:
    done = run_mirror(["--config", str(cfg), "sync", "--json"], env_for(home, **env))
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


# -- 2. faults through the proxy -------------------------------------------------------------
def test_corrupted_layer_fails_its_tag_only_and_stores_nothing_corrupt(
    peers: Peers, tmp_path: Path
) -> None:
    home = tmp_path / "mirror"
    bad = peers.top2.digest
    with TargetedProxy(peers.plain.url) as proxy:
        proxy.target = bad
        proxy.plan("target", "corrupt")
        cfg = registry_config(tmp_path / "m.toml", proxy.url, REPOS, name=NAME)
        code, doc, err = _sync(cfg, home)
        corrupted = [s for s in proxy.seen if proxy.kind(s.path) == "target"]
    assert code == 6, err
    assert doc["outcome"] == "partial"
    failures = doc["failures"]
    assert isinstance(failures, list) and len(failures) == 1
    assert "test/app:v2" in failures[0] and bad in failures[0]
    assert "digest mismatch" in failures[0]
    assert len(corrupted) == 1  # an integrity failure is not retried within the run
    # nothing corrupt stored, no partial kept for the bad bytes, v2 not published
    assert bad not in stored(home) and partials(home) == []
    assert index_refs(home).keys() == ALL - {f"{NAME}/test/app:v2"}
    verify_clean(env_for(home))

    # the next sync (no fault) completes v2, fetching only what v2 still lacks
    with TargetedProxy(peers.plain.url) as proxy:
        cfg = registry_config(tmp_path / "m.toml", proxy.url, REPOS, name=NAME)
        code, doc, err = _sync(cfg, home)
        blob_gets = [s.path.rsplit("/", 1)[1] for s in proxy.requests_for("blob")]
    assert code == 0, err
    assert bad in blob_gets and peers.base.digest not in blob_gets
    assert index_refs(home).keys() == ALL
    verify_clean(env_for(home))


def test_429_with_retry_after_then_success(peers: Peers, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    with FaultProxy(peers.plain.url) as proxy:
        proxy.retry_after = "1"
        proxy.plan("manifest", "429")
        proxy.plan("blob", "429")
        proxy.plan("tags", "429")
        cfg = registry_config(tmp_path / "m.toml", proxy.url, REPOS, name=NAME)
        code, doc, err = _sync(cfg, home)
        left = {kind: list(queue) for kind, queue in proxy.actions.items()}
        tag_lists = len(proxy.requests_for("tags"))
    assert code == 0, err
    assert doc["outcome"] == "ok" and doc["failures"] == []
    assert left == {"manifest": [], "blob": [], "tags": []}  # every 429 was served...
    assert tag_lists == len(REPOS) + 1  # ...and the refused request was sent again
    assert index_refs(home).keys() == ALL
    verify_clean(env_for(home))


def test_token_expiring_every_few_requests_mid_sync(peers: Peers, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    peers.tokens.requests.clear()
    with FaultProxy(peers.tok.url) as proxy:
        proxy.expire_after = 2  # each bearer token dies after two uses
        cfg = registry_config(
            tmp_path / "m.toml",
            proxy.url,
            REPOS,
            name=NAME,
            username_env="REG_USER",
            password_env="REG_PASS",
        )
        code, doc, err = _sync(cfg, home, REG_USER=NGC_USER, REG_PASS=NGC_KEY)
        expired = [s for s in proxy.seen if s.headers.get("authorization", "") in proxy._dead]
    assert code == 0, err
    assert doc["outcome"] == "ok"
    assert expired, "no token expired: the test did not exercise renewal"
    renewals = [r for r in peers.tokens.requests if r.scopes]
    assert len(renewals) >= 4 and all(r.user == NGC_USER for r in renewals)
    assert index_refs(home).keys() == ALL
    verify_clean(env_for(home))


# -- 3. a manifest naming a blob the registry lost -------------------------------------------
@pytest.fixture(scope="module")
def damaged(peers: Peers) -> Iterator[Registry]:
    """A registry holding the fixture images whose storage lost test/app:v2's top layer."""
    with Registry(peers.work / "damaged") as reg:
        _push_all(peers.layout, reg, peers.skopeo_home)
        hexd = peers.top2.digest[7:]
        blobs = reg.workdir / "data/docker/registry/v2/blobs/sha256"
        data = blobs / hexd[:2] / hexd / "data"
        assert data.is_file()
        data.unlink()
        yield reg


def _two_sources(path: Path, url: str) -> Path:
    """test/other and test/app as two `[[registry]]` tables of the same registry."""
    tables = [
        f'[[registry]]\nurl = "{url}"\nname = "{NAME}"\nrepositories = ["{repo}"]\n'
        for repo in ("test/other", "test/app")
    ]
    path.write_text("[ngc]\nkinds = []\n\n" + "\n".join(tables))
    return path


def _check_v2_unpublished(peers: Peers, home: Path, code: int, doc: dict[str, object]) -> None:
    assert code == 6
    assert doc["outcome"] == "partial"
    failures = doc["failures"]
    assert isinstance(failures, list) and len(failures) == 1
    assert "test/app:v2" in failures[0] and peers.top2.digest in failures[0]
    assert "404" in failures[0]
    assert index_refs(home).keys() == ALL - {f"{NAME}/test/app:v2"}
    assert peers.top2.digest not in stored(home)
    # (an empty tmp/sha256-<hex>.partial stays behind for the 404'd blob: no bytes, harmless)
    assert all(p.stat().st_size == 0 for p in partials(home))
    verify_clean(env_for(home))


def test_missing_blob_leaves_that_tag_unpublished_and_the_others_fine(
    peers: Peers, damaged: Registry, tmp_path: Path
) -> None:
    home = tmp_path / "mirror"
    # two sources: the other one succeeds (the single-source case is the next test)
    cfg = _two_sources(tmp_path / "m.toml", damaged.url)
    code, doc, err = _sync(cfg, home)
    assert code == 6, err
    _check_v2_unpublished(peers, home, code, doc)


def test_missing_blob_in_the_only_source_is_a_partial_run(
    peers: Peers, damaged: Registry, tmp_path: Path
) -> None:
    home = tmp_path / "mirror"
    cfg = registry_config(tmp_path / "m.toml", damaged.url, REPOS, name=NAME)
    code, doc, err = _sync(cfg, home)
    assert code == 6, err
    _check_v2_unpublished(peers, home, code, doc)


def test_a_missing_repository_does_not_unpublish_the_others(peers: Peers, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    repos = ["test/other", "test/nosuchrepo"]
    cfg = registry_config(tmp_path / "m.toml", peers.plain.url, repos, name=NAME)
    code, doc, err = _sync(cfg, home)
    assert code == 6, err
    failures = doc["failures"]
    assert isinstance(failures, list) and len(failures) == 1
    assert "test/nosuchrepo" in failures[0]
    assert index_refs(home).keys() == {f"{NAME}/test/other:1.0"}
