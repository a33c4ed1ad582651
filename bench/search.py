"""Benchmark: the Whoosh search index (index/) against SQLite FTS5 and tantivy, side by side.

    .venv/bin/python bench/search.py [--sizes 10k,100k] [--reps 5] [--cold-runs 7]
                                     [--workdir DIR] [--keep] [--seed 7]

Per catalog size N (synthetic, deterministic: bench/search_catalog.py), on the same docs:
build time, on-disk size, warm query latency p50/p95 over a 25-query mix (words, pairs, a rare
word, misspellings, phrases, kind/framework/precision filters; limit=20, after a warm-up), cold
`mirror search bert` as a whole process (median), and re-indexing 100 changed entries. FTS5 and
tantivy fetch the top 160 entry hits, decode the stored JSON and group them by family
(bench/search_engines.py) — less than Whoosh does since it ranks one document per family and
then lists every matching member of the chosen families (index/search.py). Also:
`python -X importtime` of the CLI search (top 10 imports), whether limit=20 groups are a
prefix of the unlimited groups, and how well index.normalize's family keys recover the
generator's families.

Targets at 100k: warm p50 <= 30 ms; cold CLI <= 0.6 s; re-index of 100 changed <= 2 s.
The machine is shared and noisy: compare ratios measured in one run, not absolute times.
tantivy is a bench-only dependency (.venv/bin/pip install tantivy); without it, it is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
MIRROR = str(Path(PY).parent / "mirror")
ENGINES_PY = str(BENCH / "search_engines.py")
sys.path.insert(0, str(BENCH))

import search_engines as eng  # noqa: E402
from search_catalog import RARE_COUNT, RARE_WORD, generate  # noqa: E402

QUERIES: list[tuple[str, str, dict[str, str]]] = [
    ("word", "bert", {}), ("word", "resnet", {}), ("word", "classification", {}),
    ("word", "tensorflow", {}), ("word", "pytorch", {}), ("word", "squad", {}),
    ("word", "int8", {}), ("word", "mobilenet", {}),
    ("two", "bert large", {}), ("two", "resnet50 tensorrt", {}), ("two", "object detection", {}),
    ("two", "seqlen 384", {}), ("two", "a100 amp", {}), ("two", "speech recognition", {}),
    ("rare", RARE_WORD, {}), ("rare", "hippocampus", {}),
    ("typo", "resnnet", {}), ("typo", "tensorflwo", {}),
    ("phrase", '"question answering"', {}), ("phrase", '"fine tuning" squad', {}),
    ("filter", "bert", {"framework": "PyTorch"}), ("filter", "resnet", {"precision": "INT8"}),
    ("filter", "classification", {"kind": "resource"}), ("filter", "tensorflow", {"kind": "image"}),
    ("filter", "bert", {"kind": "model", "framework": "TensorFlow", "precision": "FP16"}),
]
PREFIX_CHECKS: list[tuple[str, dict[str, str]]] = [
    ("bert", {}), ("resnet", {}), ("bert large", {}), ("classification", {"kind": "resource"}),
    ("tensorflow", {"precision": "FP16"}),
]
ENGINES = ("whoosh", "fts5", "tantivy")
TARGETS = (("warm p50", "p50", 0.030, "ms"), ("cold CLI", "cold", 0.6, "s"),
           ("re-index 100", "update", 2.0, "s"))
BARE_WHOOSH = ("import sys; from pathlib import Path; from index.search import search; "
               "print(len(search(Path(sys.argv[1]), 'bert', limit=20).groups))")


def parse_sizes(text: str) -> list[int]:
    return [int(float(s[:-1]) * 1000) if s.lower().endswith("k") else int(s)
            for s in text.split(",") if s]


def wait_for_normalize(max_wait: float) -> None:
    deadline = time.monotonic() + max_wait
    while True:
        importlib.invalidate_caches()
        try:
            import index.writer  # noqa: F401  (needs index.normalize)
            return
        except ImportError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"index.writer cannot be imported: {exc}") from None
            print(f"waiting for index/normalize.py ({exc}) ...", flush=True)
        time.sleep(30)


def dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def warm(run: Callable[[str, dict[str, str]], Any], reps: int) -> dict[str, list[float]]:
    """Per query label: latencies (s) of `reps` rounds after one warm-up round."""
    lat: dict[str, list[float]] = defaultdict(list)
    for r in range(reps + 1):
        for _, text, flt in QUERIES:
            dt, _ = timed(lambda t=text, f=flt: run(t, f))
            if r:
                lat[qlabel(text, flt)].append(dt)
    return lat


def qlabel(text: str, flt: dict[str, str]) -> str:
    return text + "".join(f" --{k} {v}" for k, v in flt.items())


def cold(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall time of `runs` fresh processes (after one untimed run)."""
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def importtime(cmd: list[str], env: dict[str, str], out: Path) -> list[tuple[int, int, str]]:
    """(cumulative us, self us, module with its nesting indent), top 10 by cumulative."""
    with out.open("w") as fh:
        subprocess.run([PY, "-X", "importtime", *cmd], env=env, check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=fh)
    rows = []
    for line in out.read_text().splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        rows.append((int(cum_us), int(self_us), name.rstrip()[1:]))
    top = sum(cum for cum, _, name in rows if not name.startswith(" "))
    return [(top, 0, "(all top-level imports)"), *sorted(rows, reverse=True)[:10]]


def family_check(docs: list[Any], truth: dict[str, str]) -> str:
    keys_of: dict[str, set[str]] = defaultdict(set)
    fams_of: dict[str, set[str]] = defaultdict(set)
    for d in docs:
        keys_of[truth[d.id]].add(d.family)
        fams_of[d.family].add(truth[d.id])
    split = sum(len(v) > 1 for v in keys_of.values())
    merged = sum(len(v) > 1 for v in fams_of.values())
    return (f"{len(keys_of)} generated families -> {len(fams_of)} family keys "
            f"({split} families split over several keys, {merged} keys merge several families)")


def changed_docs(docs: list[Any], round_no: int) -> list[Any]:
    step = max(1, len(docs) // 100)
    out = []
    for d in docs[::step][:100]:
        vers = [f"9.{round_no}.0", *d.versions]
        out.append(dataclasses.replace(d, description=f"{d.description} refreshedtoken{round_no}",
                                       versions=vers, latest_version=vers[0], labels=[*d.labels]))
    return out


def run_size(n: int, work: Path, args: argparse.Namespace, have_tv: bool) -> dict[str, Any]:
    from index.search import Index
    from index.writer import current_dir, enrich, rebuild, update

    res: dict[str, Any] = {"n": n, "engines": {}, "notes": []}
    t_gen, docs = timed(lambda: generate(n, args.seed))
    truth = {d.id: d.family for d in docs}
    print(f"\n[{n:,}] generated in {t_gen:.1f} s; building Whoosh ...", flush=True)
    root = work / f"mirror-{n}"
    sroot = root / "search"
    t_build, _ = timed(lambda: rebuild(sroot, docs))
    t_enrich, _ = timed(lambda: [enrich(d) for d in docs])
    res["notes"].append(f"family keys: {family_check(docs, truth)}")
    res["notes"].append(f"enrich() alone (family keys + variants, in every build): "
                        f"{t_enrich:.2f} s")
    gen_dir = current_dir(sroot)
    assert gen_dir is not None
    ix = Index(sroot)

    def w_run(text: str, flt: dict[str, str], limit: int | None = 20) -> list[str]:
        return [g.family for g in ix.search(text, limit=limit, **flt).groups]

    def topk_missing(text: str, flt: dict[str, str], k: int = 160) -> int:
        """Docs scoring above the k-th hit of Whoosh's (optimized) top-k that it left out."""
        q = ix.parse(text)
        f = ix._filter(flt.get("kind"), flt.get("framework"), flt.get("precision"))
        got = {h["id"]: h.score for h in ix.searcher.search(q, limit=k, filter=f)}
        kth = min(got.values(), default=0.0)
        return sum(h.score > kth and h["id"] not in got
                   for h in ix.searcher.search(q, limit=None, filter=f))

    wr: dict[str, Any] = {"build": t_build, "size": dir_size(gen_dir)}
    print(f"[{n:,}] Whoosh built in {t_build:.1f} s; warm queries ...", flush=True)
    wr["lat"] = warm(w_run, args.reps)
    wr["groups"] = {qlabel(t, f): len(w_run(t, f)) for _, t, f in QUERIES}
    checks = []
    for text, flt in PREFIX_CHECKS:
        lr, fr = ix.search(text, limit=20, **flt), ix.search(text, limit=None, **flt)
        lim, full = [g.family for g in lr.groups], [g.family for g in fr.groups]
        ok = lim == full[: len(lim)] and len(lim) == min(20, len(full))
        bad = next((i for i, (a, b) in enumerate(zip(lim, full, strict=False)) if a != b), None)
        extra = "" if ok else f", first differs at rank {bad}"
        if m := topk_missing(text, flt):
            extra += f", {m} docs missing from an entry top-160"
        if lr.groups and (d := lr.groups[0].best_score - fr.groups[0].best_score):
            extra += f", top score {d:+.3f} vs unlimited"
        checks.append(f"{qlabel(text, flt)!r} {'OK' if ok else 'MISMATCH'} "
                      f"({len(lim)}/{len(full)} groups{extra})")
    res["notes"].append("limit=20 prefix of unlimited: " + "; ".join(checks))
    # cold runs with byte code cached in the work dir (this sandbox sets PYTHONDONTWRITEBYTECODE
    # and index/ has no .pyc, so as-is every process would compile index/ from source)
    pyc = {"PYTHONPYCACHEPREFIX": str(work / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
    env = {**os.environ, "MIRROR_HOME": str(root), **pyc}
    print(f"[{n:,}] cold processes ...", flush=True)
    wr["cold"] = cold([MIRROR, "search", "bert"], args.cold_runs, env)
    wr["cold_bare"] = cold([PY, "-c", BARE_WHOOSH, str(sroot)], args.cold_runs, env)
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        as_is = cold([MIRROR, "search", "bert"], args.cold_runs,
                     {**os.environ, "MIRROR_HOME": str(root)})
        res["notes"].append(f"cold `mirror search bert` without cached byte code (this sandbox's "
                            f"PYTHONDONTWRITEBYTECODE=1): {as_is * 1e3:.0f} ms")
    out = subprocess.run([MIRROR, "search", "--json", "bert"], env=env, capture_output=True,
                         text=True, check=True, cwd=REPO).stdout
    fams = json.loads(out)["groups"]
    res["notes"].append(f"`mirror search --json bert`: {len(fams)} groups, "
                        f"{sum(g['count'] for g in fams)} members, {len(out):,} bytes of JSON")
    res["importtime"] = importtime([MIRROR, "search", "bert"], env, work / f"imp-{n}.txt")
    ch = changed_docs(docs, 1)
    wr["update"], _ = timed(lambda: update(sroot, ch, []))
    ix.close()
    ix = Index(sroot)
    got = ix.search("refreshedtoken1", limit=None).total_members
    res["notes"].append(f"whoosh update visible: {'OK' if got == 100 else 'WRONG'} ({got}/100)")
    ix.close()
    res["engines"]["whoosh"] = wr

    others = [("fts5", eng.fts_build, eng.fts_update, eng.fts_open, eng.fts_search,
               work / f"fts-{n}.sqlite")]
    if have_tv:
        others.append(("tantivy", eng.tv_build, eng.tv_update, eng.tv_open, eng.tv_search,
                       work / f"tantivy-{n}"))
    for name, build, upd, opener, search, path in others:
        print(f"[{n:,}] {name} ...", flush=True)
        r: dict[str, Any] = {}
        r["build"], _ = timed(lambda b=build, p=path: b(p, docs))
        r["size"] = dir_size(path)
        h = opener(path)
        r["lat"] = warm(lambda t, f, s=search, h=h: s(h, t, **f), args.reps)
        r["groups"] = {qlabel(t, f): len(search(h, t, **f)) for _, t, f in QUERIES}
        del h
        r["cold"] = cold([PY, ENGINES_PY, name, str(path), "bert"], args.cold_runs,
                         {**os.environ, **pyc})
        r["update"], _ = timed(lambda u=upd, p=path: u(p, changed_docs(docs, 2)))
        got = sum(len(m) for _, m in search(opener(path), "refreshedtoken2", limit=200))
        res["notes"].append(f"{name} update visible: {'OK' if got == 100 else 'WRONG'} "
                            f"({got}/100)")
        res["engines"][name] = r
    rare = wr["groups"][RARE_WORD]
    res["notes"].append(f"rare word {RARE_WORD!r} is in {RARE_COUNT} docs: Whoosh returns "
                        f"{rare} groups")
    return res


def summarize(r: dict[str, Any]) -> dict[str, float]:
    lat = [x for xs in r["lat"].values() for x in xs]
    return {"build": r["build"], "size": r["size"] / 1e6, "p50": statistics.median(lat),
            "p95": pct(lat, 95), "cold": r["cold"], "update": r["update"]}


def report(all_res: list[dict[str, Any]]) -> None:
    print("\n" + "=" * 100)
    hdr = (f"{'N':>8} {'engine':8} {'build s':>8} {'size MB':>8} {'warm p50 ms':>12} "
           f"{'warm p95 ms':>12} {'cold ms':>8} {'update100 s':>12}")
    print(hdr)
    for res in all_res:
        s = {e: summarize(r) for e, r in res["engines"].items()}
        for e, v in s.items():
            print(f"{res['n']:>8,} {e:8} {v['build']:8.2f} {v['size']:8.1f} {v['p50'] * 1e3:12.2f} "
                  f"{v['p95'] * 1e3:12.2f} {v['cold'] * 1e3:8.0f} {v['update']:12.3f}")
        for other in ("fts5", "tantivy"):
            if other in s:
                w, o = s["whoosh"], s[other]
                print(f"{'':8} {'whoosh/' + other:16} " + "  ".join(
                    f"{k} {w[k] / o[k]:.1f}x" for k in ("build", "size", "p50", "p95", "cold",
                                                        "update")))
        print(f"{'':8} whoosh cold as a bare script (no CLI): "
              f"{res['engines']['whoosh']['cold_bare'] * 1e3:.0f} ms")
    big = all_res[-1]
    for res in all_res:
        print(f"\n-- N = {res['n']:,}: checks")
        for note in res["notes"]:
            print("  " + note)
    print(f"\n-- per query at N = {big['n']:,}: median warm ms (groups returned)")
    engines = list(big["engines"])
    print(f"  {'kind':6} {'query':58}" + "".join(f"{e:>16}" for e in engines))
    for kind, text, flt in QUERIES:
        q = qlabel(text, flt)
        cells = "".join(f"{statistics.median(big['engines'][e]['lat'][q]) * 1e3:10.2f} "
                        f"({big['engines'][e]['groups'][q]:>2})" for e in engines)
        print(f"  {kind:6} {q:58}{cells}")
    print(f"\n-- python -X importtime `mirror search bert` (N = {big['n']:,}; process median "
          f"{big['engines']['whoosh']['cold'] * 1e3:.0f} ms): top 10 cumulative")
    for cum, own, name in big["importtime"]:
        print(f"  {cum / 1e3:8.1f} ms cumulative {own / 1e3:7.1f} ms self  {name}")
    print("\n-- targets (at N = 100,000)")
    at = next((r for r in all_res if r["n"] == 100_000), None)
    for label, key, limit, unit in TARGETS:
        if at is None:
            print(f"  {label:14} N/A (100k not in --sizes)")
            continue
        v = summarize(at["engines"]["whoosh"])[key]
        shown = f"{v * 1e3:.1f} ms" if unit == "ms" else f"{v:.3f} s"
        lim = f"{limit * 1e3:.0f} ms" if unit == "ms" else f"{limit} s"
        print(f"  {label:14} {shown:>10}  (<= {lim})  {'PASS' if v <= limit else 'FAIL'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10k,100k", help="catalog sizes, e.g. 2k or 10k,100k")
    ap.add_argument("--reps", type=int, default=5, help="timed rounds of the query mix")
    ap.add_argument("--cold-runs", type=int, default=7, help="fresh processes per engine")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, help="default: a temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the indexes in --workdir")
    ap.add_argument("--wait", type=float, default=1800,
                    help="seconds to wait for index/normalize.py to appear")
    args = ap.parse_args()
    wait_for_normalize(args.wait)
    have_tv = importlib.util.find_spec("tantivy") is not None
    if not have_tv:
        print("tantivy is not installed (.venv/bin/pip install tantivy): skipping it")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="search-bench-", dir=args.workdir))
    t0 = time.perf_counter()
    try:
        results = [run_size(n, work, args, have_tv) for n in parse_sizes(args.sizes)]
        report(results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n(total {time.perf_counter() - t0:.0f} s; load average {load}; work dir {work}"
          f"{'' if args.keep else ', removed'})")


if __name__ == "__main__":
    main()
