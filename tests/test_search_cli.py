"""`mirror search` / `mirror show` end to end on a mirror synced from the seed catalog."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.fakengc import FakeNGC, seed_catalog
from mirror.sync import run_sync
from tests.conftest import cli_env, make_settings, run_mirror


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path_factory.mktemp("seeded") / "mirror"
    with FakeNGC(seed_catalog()) as fake:
        report = run_sync(make_settings(home, fake.url, concurrency=8))
        assert report.outcome == "ok" and report.index_error is None
        yield home, cli_env(home, fake.url)


def search_json(env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    proc = run_mirror(["search", *args, "--json"], env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _group_of(doc: dict, display: str) -> dict:  # type: ignore[type-arg]
    for g in doc["groups"]:
        if any(m["display_name"] == display for m in g["members"]):
            return g
    raise AssertionError(f"{display!r} not found")


def test_bert_collapses_duplicates(seeded: tuple[Path, dict[str, str]]) -> None:
    _, env = seeded
    doc = search_json(env, "bert", "--limit", "100")
    names = [m["display_name"] for g in doc["groups"] for m in g["members"]]
    assert len(doc["groups"]) < len(names)  # something collapsed
    g = _group_of(doc, "BERT-Large(pre-training) for TensorFlow")
    members = {m["display_name"] for m in g["members"]}
    assert "BERT-Large (pre-training) for TensorFlow" in members
    squad11 = _group_of(doc, "BERT-Base(fine-tuning) - SQuAD 1.1, seqLen=128")
    assert all("1.1" in m["display_name"] for m in squad11["members"])
    assert len(squad11["members"]) == 4  # 2 seqLens x 2 duplicates
    assert set(squad11["variants"]["seqlen"]) == {"128", "384"}
    assert "seqLen 128, 384" in squad11["summary"]


def test_onnx_resnet50_six_variants_are_one_hit(seeded: tuple[Path, dict[str, str]]) -> None:
    _, env = seeded
    doc = search_json(env, "onnx", "resnet50")
    assert len(doc["groups"]) == 1 and doc["groups"][0]["count"] == 6
    v = doc["groups"][0]["variants"]
    assert set(v["gpu"]) == {"T4", "V100-16G"} and set(v["precision"]) == {"FP16", "FP32", "INT8"}


def test_analyzers_split_names(seeded: tuple[Path, dict[str, str]]) -> None:
    _, env = seeded
    a = {m["path"] for g in search_json(env, "resnet18")["groups"] for m in g["members"]}
    b = {m["path"] for g in search_json(env, "resnet", "18")["groups"] for m in g["members"]}
    assert a and a == b
    c = search_json(env, "seqlen", "128")
    assert c["groups"] and all(
        "seqLen=128" in m["display_name"] for g in c["groups"] for m in g["members"]
    )


def test_name_matches_rank_above_description_matches(seeded: tuple[Path, dict[str, str]]) -> None:
    _, env = seeded
    doc = search_json(env, "gnmt")
    assert "GNMT" in doc["groups"][0]["title"]


def test_filters(seeded: tuple[Path, dict[str, str]]) -> None:
    _, env = seeded
    doc = search_json(env, "onnx", "--precision", "int8", "--limit", "50")
    members = [m for g in doc["groups"] for m in g["members"]]
    assert members and all("INT8" in m["display_name"] for m in members)
    res = search_json(env, "bert", "--kind", "resource")
    assert all(g["kind"] == "resource" for g in res["groups"])


def test_human_output_and_all(seeded: tuple[Path, dict[str, str]]) -> None:
    _, env = seeded
    short = run_mirror(["search", "onnx", "resnet50"], env)
    assert short.returncode == 0 and "6 variants" in short.stdout and "--all" in short.stdout
    full = run_mirror(["search", "onnx", "resnet50", "--all"], env)
    assert full.stdout.count("ONNX ResNet50 TensorRT 5.0.2") >= 6


def test_did_you_mean(seeded: tuple[Path, dict[str, str]]) -> None:
    _, env = seeded
    proc = run_mirror(["search", "brt"], env)
    assert proc.returncode == 0 and "did you mean" in proc.stdout and "bert" in proc.stdout


@pytest.mark.parametrize("q", ["(bert", "bert)", 'bert "large', "nosuchfield:bert"])
def test_syntax_errors_exit_2_without_traceback(
    seeded: tuple[Path, dict[str, str]], q: str
) -> None:
    _, env = seeded
    proc = run_mirror(["search", q], env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "query syntax" in proc.stderr and "Traceback" not in proc.stderr


def test_show_entry(seeded: tuple[Path, dict[str, str]]) -> None:
    _, env = seeded
    path = search_json(env, "onnx", "resnet50")["groups"][0]["members"][0]["path"]
    proc = run_mirror(["show", path, "--json"], env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["files"] and all(f["sha256"] and f["blob_digest"] for f in doc["files"])
    assert doc["versions"][0]["mirrored"] is True
    assert doc["command"].startswith("ngc registry model download-version " + path)
    text = run_mirror(["show", path], env).stdout
    assert "sha256:" in text and "get it:" in text
    bad = run_mirror(["show", "nvidia/nope"], env)
    assert bad.returncode == 2 and "no entry" in bad.stderr


def test_missing_or_old_index_is_rebuilt(
    tmp_path: Path, seeded: tuple[Path, dict[str, str]]
) -> None:
    home, env = seeded
    copy = tmp_path / "copy"
    shutil.copytree(home, copy, symlinks=True)
    env2 = {**env, "MIRROR_HOME": str(copy)}
    shutil.rmtree(copy / "search")
    assert search_json(env2, "gnmt")["groups"]
    current = copy / "search" / os.readlink(copy / "search" / "current")
    (current / "FORMAT").write_text("0\n")
    assert search_json(env2, "gnmt")["groups"]
    assert (
        copy / "search" / os.readlink(copy / "search" / "current") / "FORMAT"
    ).read_text() != "0\n"
    proc = run_mirror(["index", "rebuild"], env2)
    assert proc.returncode == 0 and "rebuilt" in proc.stdout


def test_sync_updates_the_index_incrementally(home: Path) -> None:
    cat = seed_catalog(limit=10)
    with FakeNGC(cat) as fake:
        s = make_settings(home, fake.url)
        run_sync(s)
        env = cli_env(home, fake.url)
        assert not search_json(env, "zebrafish")["groups"]
        target = cat.of_kind("model")[4]
        target.display_name = "Zebrafish Segmentation"
        cat.touch(target)
        gone = cat.of_kind("model")[5]
        cat.remove(gone)
        run_sync(s)
        hits = search_json(env, "zebrafish")["groups"]
        assert [m["path"] for g in hits for m in g["members"]] == [target.resource_id]
        everything = search_json(env, "*", "--limit", "1000")
        paths = {m["path"] for g in everything["groups"] for m in g["members"]}
        assert gone.resource_id not in paths


def test_search_during_a_rebuild_sees_a_consistent_index(
    seeded: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    from index.search import Index
    from mirror.db import Database, open_catalog_db
    from mirror.indexing import rebuild_index
    from mirror.paths import MirrorPaths

    home, _ = seeded
    copy = tmp_path / "copy"
    shutil.copytree(home, copy, symlinks=True)
    paths = MirrorPaths(copy)
    baseline = len(Index(paths.search).search("bert", limit=None).groups)
    errors: list[BaseException] = []
    counts: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                ix = Index(paths.search)
                counts.append(len(ix.search("bert", limit=None).groups))
                ix.close()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    db = Database(open_catalog_db(paths.db))
    for _ in range(3):
        rebuild_index(paths, db)
    stop.set()
    t.join()
    assert not errors and counts and set(counts) == {baseline}
