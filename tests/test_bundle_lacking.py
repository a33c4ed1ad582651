"""A site that dropped bytes it once confirmed (its own `mirror prune`, `verify --repair`):
incremental bundles keep importing, the receipt asks for what the site wants, the next export
sends it; and none of that opens a door for damaged, stale or hostile input."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.config import Selection
from mirror.fakengc import FakeCatalog, FakeEntry, FakeFile, FakeNGC, FakeVersion
from tests.conftest import write_config
from tests.test_bundle_support import export, import_, manifest, mirror, sync

OLD = b"old weights " * 4000
OLD_DIGEST = "sha256:" + hashlib.sha256(OLD).hexdigest()
SELECT = (Selection(pattern="nvidia/*", latest=1),)


def _version(vid: str, day: int, payload: bytes) -> FakeVersion:
    when = f"2026-0{day}-01T00:00:00.000Z"
    return FakeVersion(vid, created=when, updated=when, files=[FakeFile("w.bin", content=payload)])


def _blob(home: Path, digest: str) -> Path:
    return home / "blobs" / "sha256" / digest[7:]


def _json(done: Any, code: int = 0) -> dict[str, Any]:
    assert done.returncode == code, done.stdout + done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


@dataclass
class Lacking:
    src: Path
    site: Path
    site_cfg: Path
    stale: Path  # an extra bundle exported early and never imported
    receipt: str  # the site's receipt after it pruned bert:1.0
    cat: FakeCatalog


def _site_that_pruned(tmp_path: Path) -> Lacking:
    """src syncs nvidia/bert 1.0 then 2.0 and sends both; the site prunes 1.0 (latest = 1);
    then the source publishes nvidia/bert_copy holding 1.0's very bytes."""
    src, site = tmp_path / "src", tmp_path / "site"
    site_cfg = write_config(tmp_path / "site.toml", 'pattern = "nvidia/*"\nlatest = 1\n')
    cat = FakeCatalog()
    bert = cat.add(
        FakeEntry(
            kind="model",
            org="nvidia",
            team=None,
            name="bert",
            updated="2026-01-01T00:00:00.000Z",
            versions=[_version("1.0", 1, OLD)],
        )
    )
    with FakeNGC(cat) as fake:
        sync(src, fake, select=SELECT)
        export(src, tmp_path / "b1", "--site", "lab")
        r1 = import_(site, tmp_path / "b1")["receipt"]
        export(src, tmp_path / "stale", "--since", "0")  # kept aside, imported much later
        cat.add_version(bert, _version("2.0", 2, b"new weights " * 4000))
        sync(src, fake, select=SELECT)
        export(src, tmp_path / "b2", "--site", "lab", "--receipt", r1)
        r2 = import_(site, tmp_path / "b2")["receipt"]
        pruned = _json(mirror(site, "--config", str(site_cfg), "prune", "--json"))
        assert pruned["released"] == ["model nvidia/bert:1.0"]
        assert not _blob(site, OLD_DIGEST).exists()
        cat.add(
            FakeEntry(
                kind="model",
                org="nvidia",
                team=None,
                name="bert_copy",
                updated="2026-03-01T00:00:00.000Z",
                versions=[_version("1.0", 3, OLD)],  # bert 1.0's weights, byte for byte
            )
        )
        sync(src, fake, select=SELECT)
    return Lacking(src, site, site_cfg, tmp_path / "stale", r2, cat)


def _shown(home: Path, path: str) -> dict[str, bool]:
    doc = _json(mirror(home, "show", path, "--json"))
    return {v["version"]: v["mirrored"] for v in doc["versions"]}


def test_a_site_that_pruned_gets_shared_bytes_again(tmp_path: Path) -> None:
    t = _site_that_pruned(tmp_path)
    # the exporter trusts the site's receipts: bert 1.0's bytes are "there" already
    export(t.src, tmp_path / "b3", "--site", "lab", "--receipt", t.receipt)
    assert OLD_DIGEST not in {b["digest"] for b in manifest(tmp_path / "b3")["blobs"]}
    # the import goes through (it used to exit 4, and every later bundle too), partial: 6
    args = ["--config", str(t.site_cfg), "import", str(tmp_path / "b3"), "--json"]
    done = _json(mirror(t.site, *args), code=6)
    assert done["blobs_lacking"] == 1 and done["blobs_requested"] == 1
    assert json.loads(Path(done["receipt"]).read_text())["lacking"] == [OLD_DIGEST]
    assert _shown(t.site, "nvidia/bert_copy") == {"1.0": False}
    assert _shown(t.site, "nvidia/bert")["2.0"] is True

    # the receipt goes back; the next export sends bert_copy again, with its bytes
    export(t.src, tmp_path / "b4", "--site", "lab", "--receipt", done["receipt"])
    assert OLD_DIGEST in {b["digest"] for b in manifest(tmp_path / "b4")["blobs"]}
    again = _json(
        mirror(t.site, "--config", str(t.site_cfg), "import", str(tmp_path / "b4"), "--json")
    )
    assert again["blobs_lacking"] == 0 and _blob(t.site, OLD_DIGEST).exists()
    assert json.loads(Path(again["receipt"]).read_text())["lacking"] == []
    assert _shown(t.site, "nvidia/bert_copy") == {"1.0": True}
    assert _shown(t.site, "nvidia/bert")["2.0"] is True
    assert _json(mirror(t.site, "verify", "--json"))["clean"] is True
    # and with that receipt back, nothing is owed any more
    last = export(t.src, tmp_path / "b5", "--site", "lab", "--receipt", again["receipt"])
    assert last.get("nothing_to_do") or last["blobs"] == 0


def test_an_old_bundle_never_rolls_the_site_back(tmp_path: Path) -> None:
    """The stale bundle carries the lacking blob, but it is older than the site's catalog:
    nothing of it is applied (bert 2.0 must not turn into "removed")."""
    t = _site_that_pruned(tmp_path)
    export(t.src, tmp_path / "b3", "--site", "lab", "--receipt", t.receipt)
    args = ["--config", str(t.site_cfg), "import", str(tmp_path / "b3"), "--json"]
    _json(mirror(t.site, *args), code=6)
    before = _shown(t.site, "nvidia/bert")
    stale = _json(mirror(t.site, "--config", str(t.site_cfg), "import", str(t.stale), "--json"))
    assert stale["already_imported"] is True
    assert _shown(t.site, "nvidia/bert") == before == {"1.0": False, "2.0": True}


def test_a_bundle_missing_a_blob_it_needs_is_refused(tmp_path: Path) -> None:
    """Only a bundle for a named site leaves blobs out (those the site confirmed). A full,
    unsigned bundle whose manifest and blob directory lost one blob exits 4 as before."""
    src, site = tmp_path / "src", tmp_path / "site"
    cat = FakeCatalog()
    cat.add(
        FakeEntry(
            kind="model",
            org="nvidia",
            team=None,
            name="bert",
            updated="2026-01-01T00:00:00.000Z",
            versions=[_version("1.0", 1, OLD)],
        )
    )
    with FakeNGC(cat) as fake:
        sync(src, fake, select=SELECT)
    bundle = tmp_path / "b1"
    export(src, bundle)
    doc = json.loads((bundle / "mirror-bundle.json").read_text())
    doc["blobs"] = [b for b in doc["blobs"] if b["digest"] != OLD_DIGEST]
    (bundle / "mirror-bundle.json").write_text(json.dumps(doc))
    _blob(bundle, OLD_DIGEST).unlink()
    refused = mirror(site, "import", str(bundle))
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "neither in the bundle nor in this mirror" in refused.stderr


def test_a_receipt_cannot_ask_for_what_was_never_sent(tmp_path: Path) -> None:
    """Bogus digests in a receipt's lacking list (edited, or another site's) ask for nothing:
    only blobs this mirror sent that site can be lacking there."""
    t = _site_that_pruned(tmp_path)
    receipt = json.loads(Path(t.receipt).read_text())
    receipt["lacking"] = ["sha256:" + "ab" * 32, "not-a-digest", OLD_DIGEST]
    edited = tmp_path / "edited-receipt.json"
    edited.write_text(json.dumps(receipt))
    plan = export(t.src, tmp_path / "b3", "--site", "lab", "--receipt", str(edited))
    digests = {b["digest"] for b in manifest(tmp_path / "b3")["blobs"]}
    assert OLD_DIGEST in digests and "sha256:" + "ab" * 32 not in digests
    assert plan["blobs"] == len(digests)
