"""Store maintenance commands of the CLI: verify, gc, prune.

Registered on `mirror.cli.app` when mirror.cli imports this module (at its end); shares its
option types and helpers. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mirror.cli import JsonOpt, QuietOpt, _emit_json, _open_store, _settings, _setup_logging, app
from mirror.render import human_bytes


# -- verify / gc / prune ---------------------------------------------------------------------------
@app.command()
def verify(
    sample: Annotated[
        int | None, typer.Option("--sample", help="Re-hash only N random blobs.")
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Forget corrupt/missing blobs so the next sync refetches them."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Re-hash stored blobs; report corrupt, missing and orphan blobs (exit 4 on damage)."""
    _setup_logging()
    from mirror.errors import IntegrityError
    from mirror.verify import verify_store

    with _open_store(lock=repair, command="verify") as (store, db):
        report = verify_store(store, db, sample=sample, repair=repair)
    if as_json:
        _emit_json(report.as_dict())
    else:
        out = sys.stdout.write
        out(
            f"checked {report.checked} blobs ({human_bytes(report.bytes_checked)}): "
            f"{len(report.corrupt)} corrupt, {len(report.missing)} missing, "
            f"{len(report.orphans)} orphan\n"
        )
        for d in report.corrupt:
            out(f"  CORRUPT  {d}\n")
        for d in report.missing:
            out(f"  MISSING  {d}\n")
        for d in report.orphans:
            out(f"  orphan   {d}\n")
    if not report.clean and not repair:
        raise IntegrityError(
            f"{len(report.corrupt)} corrupt and {len(report.missing)} missing blob(s)",
            hint="run `mirror verify --repair`, then `mirror sync` to fetch them again",
        )
    return 0


@app.command()
def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be removed.")
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Remove blobs that no catalog row references (fails closed on a damaged store)."""
    _setup_logging()
    from mirror.gc import collect_garbage

    with _open_store(lock=True, command="gc") as (store, db):
        report = collect_garbage(store, db, dry_run=dry_run)
        if not dry_run:
            from mirror import catalog

            with db.session() as s:
                counts = {"removed": report.removed, "partials_removed": report.partials_removed}
                catalog.record_run(s, "gc", counts)
    if as_json:
        _emit_json(report.as_dict())
    else:
        verb = "would remove" if dry_run else "removed"
        sys.stdout.write(
            f"{verb} {len(report.unreferenced)} unreferenced blobs ({human_bytes(report.bytes)})\n"
        )
    return 0


@app.command()
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be released and freed.")
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> int:
    """Release the bytes of versions the config no longer selects (older than `latest` N,
    deselected, removed upstream), then delete blobs nothing references."""
    _setup_logging(quiet)
    from mirror.paths import MirrorPaths
    from mirror.prune import prune as run_prune

    settings = _settings()
    with _open_store(lock=True, command="prune") as (store, db):
        report = run_prune(MirrorPaths(settings.home), settings, store, db, dry_run=dry_run)
    if as_json:
        _emit_json(report.as_dict())
        return 0
    if quiet:
        return 0
    out = sys.stdout.write
    verb = "would release" if dry_run else "released"
    out(
        f"{verb} {len(report.released)} versions ({report.files_released} files); "
        f"{'would free' if dry_run else 'freed'} {report.blobs_freed} blobs "
        f"({human_bytes(report.bytes_freed)})\n"
    )
    for name in report.released:
        out(f"  release  {name}\n")
    for name in report.held_back:
        out(f"  kept     {name} (a selected version is not fully stored yet)\n")
    return 0
