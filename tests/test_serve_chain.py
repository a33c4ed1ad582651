"""Chained mirrors: `mirror sync` with another mirror's `mirror serve` as its NGC upstream.

fake NGC --sync--> mirror A --serve (http, or https + read tokens)--> sync --> mirror B.
B must end up with A's catalog and exactly A's mirrored bytes, and a second sync of B must
fetch nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import select

from mirror.config import Selection, Settings
from mirror.db import Database, open_catalog_db
from mirror.fakengc import FakeNGC, seed_catalog
from mirror.schema import Entry, File, Version
from mirror.sync import run_sync
from tests.conftest import cli_env, make_settings, run_mirror
from tests.serve_peer import ServeThread
from tests.tls_certs import make_tls


def _catalog(home: Path) -> tuple[set[tuple[str, str]], dict[tuple[str, str, str], str]]:
    db = Database(open_catalog_db(home / "mirror.db"))
    with db.session() as s:
        entries = {
            (e.kind, e.path)
            for e in s.scalars(select(Entry).where(Entry.removed_snapshot_id.is_(None)))
        }
        stored = {
            (e_path, v, f_path): str(digest)
            for e_path, v, f_path, digest in s.execute(
                select(Entry.path, Version.version, File.path, File.blob_digest)
                .join(Version, Version.entry_id == Entry.id)
                .join(File, File.version_id == Version.id)
                .where(File.blob_digest.is_not(None))
            )
        }
    db.engine.dispose()
    return entries, stored


@pytest.fixture(scope="module")
def mirror_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("a") / "mirror"
    with FakeNGC(seed_catalog(limit=8, versions_per_entry=2)) as fake:
        report = run_sync(
            make_settings(home, fake.url, kinds=("model", "resource"), select=(Selection("*"),))
        )
    assert report.outcome == "ok", report.failures
    return home


def _downstream(home: Path, url: str, **http: object) -> Settings:
    s = make_settings(home, url, kinds=("model", "resource"), select=(Selection("*", latest=None),))
    return dataclasses.replace(s, http=dataclasses.replace(s.http, **http))


def test_sync_from_a_served_mirror_copies_catalog_and_bytes(mirror_a: Path, tmp_path: Path) -> None:
    home_b = tmp_path / "b"
    with ServeThread(mirror_a) as served:
        first = run_sync(_downstream(home_b, served.url))
        second = run_sync(_downstream(home_b, served.url))
    entries_a, stored_a = _catalog(mirror_a)
    entries_b, stored_b = _catalog(home_b)
    assert entries_b == entries_a
    # B asked for every version (latest = None) but A holds only the newest of each: A lists
    # the others as not uploaded, so B takes exactly what A has, with the same digests
    assert stored_b == stored_a and stored_a
    assert first.outcome == "ok", first.failures
    assert first.files_fetched > 0
    assert second.outcome == "ok" and second.files_fetched == 0 and second.bytes_fetched == 0


def test_chain_over_tls_with_a_read_token(mirror_a: Path, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    token = "site-token-0123456789"
    home_b = tmp_path / "b"
    with ServeThread(mirror_a, tls=tls, tokens=[token]) as served:
        # the CLI, as cron would run it: key = the token, CA from [http] ca_bundle
        env = cli_env(
            home_b,
            served.url,
            NGC_API_KEY=token,
            MIRROR_HTTP_CA_BUNDLE=str(tls.ca),
            MIRROR_NGC_KINDS="model,resource",
        )
        config = tmp_path / "b.toml"
        config.write_text('[[select]]\npattern = "*"\nlatest = 1\n')
        ok = run_mirror(["--config", str(config), "sync"], env)
        assert ok.returncode == 0, ok.stderr
        assert token not in ok.stdout + ok.stderr
        # without the CA the client must refuse the certificate
        no_ca = {k: v for k, v in env.items() if k != "MIRROR_HTTP_CA_BUNDLE"}
        refused = run_mirror(
            ["--config", str(config), "sync"], {**no_ca, "MIRROR_HOME": str(tmp_path / "c")}
        )
        assert refused.returncode != 0
        assert "certificate does not verify" in refused.stderr
        assert "ca_bundle" in refused.stderr and "retry" not in refused.stderr
        # a wrong token is refused by the upstream's /token
        wrong = run_mirror(
            ["--config", str(config), "sync"],
            {**env, "NGC_API_KEY": "wrong", "MIRROR_HOME": str(tmp_path / "d")},
        )
        assert wrong.returncode != 0
        assert "wrong" not in wrong.stderr
    _, stored_a = _catalog(mirror_a)
    _, stored_b = _catalog(home_b)
    assert stored_b == stored_a


def test_a_downstream_follows_what_its_upstream_fetches_and_prunes(tmp_path: Path) -> None:
    """NGC's dates say nothing of what a mirror holds: A fetching older versions, or pruning
    them, must still reach B (the serving mirror adds a held-versions fingerprint that B's
    listing stamp includes)."""
    cat = seed_catalog(limit=3, versions_per_entry=3, include_resources=False)
    a, b = tmp_path / "a" / "mirror", tmp_path / "b" / "mirror"
    cfg = tmp_path / "a.toml"
    cfg.write_text('[[select]]\npattern = "*"\nlatest = 1\n')

    def sync_a(latest: int | None) -> None:
        select = (Selection("*", latest=latest),)
        assert run_sync(make_settings(a, fake.url, kinds=("model",), select=select)).outcome == "ok"

    with FakeNGC(cat) as fake:
        sync_a(1)
        with ServeThread(a) as srv:
            assert run_sync(_downstream(b, srv.url)).outcome == "ok"
            one = _catalog(b)[1]
            assert one == _catalog(a)[1]

            sync_a(None)  # A widens its selection: older versions arrive at A
            assert len(_catalog(a)[1]) > len(one)
            assert run_sync(_downstream(b, srv.url)).outcome == "ok"
            assert _catalog(b)[1] == _catalog(a)[1]

            pruned = run_mirror(["--config", str(cfg), "prune"], cli_env(a, fake.url))
            assert pruned.returncode == 0, pruned.stderr  # A is back to the newest versions
            assert run_sync(_downstream(b, srv.url)).outcome == "ok"
            b_cfg = tmp_path / "b.toml"
            b_cfg.write_text('[[select]]\npattern = "*"\nlatest = 0\n')
            done = run_mirror(["--config", str(b_cfg), "prune"], cli_env(b, srv.url))
            assert done.returncode == 0, done.stderr
            assert _catalog(b)[1] == _catalog(a)[1] == one
