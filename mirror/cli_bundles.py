"""Bundle commands of the CLI: export, import, bundle inspect, keys generate.

Registered on `mirror.cli.app` when mirror.cli imports this module (at its end); shares its
option types and helpers. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mirror.cli import JsonOpt, _emit_json, _open_store, _settings, _setup_logging, app
from mirror.errors import PartialRunError, UsageError
from mirror.render import human_bytes


def _bar(as_json: bool) -> Any:
    """A byte progress bar on stderr when it is a terminal (never with --json)."""
    from mirror.progress import make_progress

    return make_progress(enabled=not as_json and sys.stderr.isatty())


keys_app = typer.Typer(help="Bundle signing keys (ed25519).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
bundle_app = typer.Typer(help="Look at bundles.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


# -- bundles ----------------------------------------------------------------------------------
@app.command("export")
def export_cmd(
    dest: Annotated[Path, typer.Argument(help="Bundle directory (e.g. /media/usb/bundle).")],
    since: Annotated[
        int | None, typer.Option("--since", help="Only changes after this snapshot.")
    ] = None,
    site: Annotated[str | None, typer.Option("--site", help="Send what this site lacks.")] = None,
    receipt: Annotated[
        Path | None, typer.Option("--receipt", help="The site's receipt to trust first.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="dir (default) or tar.")] = "dir",
    split: Annotated[
        str | None, typer.Option("--split", help="Part size for tar, e.g. 4GiB.")
    ] = None,
    sign_key: Annotated[
        Path | None, typer.Option("--sign", help="ed25519 private key file.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and free space.")
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Write a bundle of what a site lacks (full, --since N or --site NAME)."""
    _setup_logging()
    from mirror.bundle.export import export_bundle
    from mirror.config import parse_size

    if since is not None and site is not None:
        raise UsageError("use --since or --site, not both", hint="--site computes its own base")
    split_bytes = parse_size(split, where="--split") if split else None
    with _open_store(lock=not dry_run, command="export") as (store, db):
        result = export_bundle(
            db,
            store,
            dest,
            since=since,
            site=site,
            receipt=receipt,
            fmt=fmt,
            split=split_bytes,
            sign_key=sign_key,
            dry_run=dry_run,
            progress=_bar(as_json),
        )
        if not dry_run and result.bundle_id:
            from mirror import catalog

            with db.session() as s:
                counts = {
                    "upserts": result.plan.upserts,
                    "removals": result.plan.removals,
                    "blobs": len(result.plan.blobs),
                }
                catalog.record_run(s, "export", counts, result.plan.blob_bytes)
    doc = result.as_dict()
    if as_json:
        _emit_json(doc)
        return 0
    out = sys.stdout.write
    head = (
        "plan (dry run)"
        if dry_run
        else (
            "nothing to export: the site has everything"
            if result.nothing_to_do
            else f"bundle {result.bundle_id}"
        )
    )
    out(
        f"{head}\n  snapshots {doc['base_snapshot']} -> {doc['target_snapshot']}"
        f"{' for site ' + site if site else ''}\n"
    )
    out(f"  catalog   {doc['upserts']} entries, {doc['removals']} removals\n")
    out(
        f"  blobs     {doc['blobs']} ({human_bytes(doc['blob_bytes'])}); already at the site: "
        f"{human_bytes(doc['bytes_saved'])}\n"
    )
    if dry_run:
        free = doc["free_bytes"]
        out(
            f"  parts     {doc['parts'] or 1}\n  free      {human_bytes(free)} at {dest}"
            f" ({'fits' if doc['fits'] else 'DOES NOT FIT'})\n"
        )
    elif not result.nothing_to_do:
        out(
            f"  written   {dest} ({fmt}"
            + (f", {len(result.parts)} parts" if result.parts else "")
            + (", signed" if result.signed else ", unsigned")
            + ")\n"
        )
    return 0


@app.command("import")
def import_cmd(
    src: Annotated[Path, typer.Argument(help="Bundle directory (or its mirror-bundle.json).")],
    verify_key: Annotated[
        Path | None,
        typer.Option("--verify-key", help="ed25519 public key; the signature must verify."),
    ] = None,
    receipt_out: Annotated[
        Path | None,
        typer.Option(
            "--receipt-out", help="Where to write the receipt (default: beside the bundle)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Verify a bundle completely, then publish its blobs and apply its catalog delta."""
    _setup_logging()
    from mirror import catalog
    from mirror.blobstore import BlobStore
    from mirror.bundle.importer import import_bundle
    from mirror.db import Database, open_catalog_db
    from mirror.fsutil import MirrorLock
    from mirror.indexing import refresh_index
    from mirror.paths import MirrorPaths
    from mirror.prune import registry_paths

    settings = _settings()
    paths = MirrorPaths(settings.home)
    paths.root.mkdir(parents=True, exist_ok=True)
    key = verify_key or (Path(settings.bundle.verify_key) if settings.bundle.verify_key else None)
    with MirrorLock(paths.lock, "import"):
        store = BlobStore(paths)
        store.init_layout()
        db = Database(open_catalog_db(paths.db))
        try:
            result = import_bundle(
                db,
                store,
                src,
                verify_key=key,
                require_signature=settings.bundle.require_signature,
                receipt_out=receipt_out,
                progress=_bar(as_json),
                selections=settings.select,
                registry_paths=registry_paths(settings),
            )
            if not result.already_imported:
                refresh_index(paths, db, result.changed, result.removed)
                if any(kind == "image" for kind, _ in result.changed + result.removed):
                    from mirror.oci_layout import write_index

                    write_index(paths, db)
                with db.session() as s:
                    catalog.record_run(
                        s,
                        "import",
                        {
                            "upserts": result.upserts,
                            "removals": result.removals,
                            "blobs_copied": result.blobs_copied,
                            "blobs_present": result.blobs_present,
                        },
                        result.bytes_copied,
                        result.snapshot_id,
                    )
        finally:
            db.engine.dispose()
    if as_json:
        _emit_json(result.as_dict())
    elif result.already_imported:
        sys.stdout.write(f"bundle {result.bundle_id} is already imported: nothing to do\n")
    else:
        sig = (
            "signature verified"
            if result.signature_verified
            else ("signed, not verified" if result.signed else "unsigned")
        )
        sys.stdout.write(
            f"imported bundle {result.bundle_id} ({sig})\n"
            f"  snapshots {result.base_snapshot} -> {result.target_snapshot} of "
            f"{result.source_mirror_id}\n"
            f"  catalog   {result.upserts} entries, {result.removals} removals\n"
            f"  blobs     {result.blobs_copied} copied ({human_bytes(result.bytes_copied)}), "
            f"{result.blobs_present} already here\n"
            f"  receipt   {result.receipt} (carry it back: mirror export --site NAME --receipt)\n"
        )
        if result.blobs_lacking:
            sys.stdout.write(
                f"  lacking   {result.blobs_lacking} blobs the bundle counted on this site "
                "having (pruned or repaired here): those files are not held; the receipt asks "
                f"the source to send again the {result.blobs_requested} this site wants\n"
            )
    if result.blobs_requested:
        raise PartialRunError(
            [
                f"{result.blobs_requested} wanted blob(s) not in the bundle nor here: carry the "
                "receipt back, the next export sends them"
            ]
        )
    return 0


@bundle_app.command("inspect")
def bundle_inspect(
    src: Annotated[Path, typer.Argument(help="Bundle directory.")],
    verify_key: Annotated[
        Path | None, typer.Option("--verify-key", help="Check the signature.")
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Describe a bundle without importing it: entries, sizes, snapshots, signature."""
    _setup_logging()
    from mirror.bundle.importer import inspect_bundle

    doc = inspect_bundle(src, verify_key)
    if as_json:
        _emit_json(doc)
    else:
        _print_inspect(doc)
    if doc["signature"].startswith("INVALID") or not doc["catalog_ok"]:
        from mirror.errors import IntegrityError

        raise IntegrityError(
            "the bundle does not verify (see above)",
            hint="do not import it; re-export or check --verify-key",
        )
    return 0


def _print_inspect(doc: Any) -> None:
    out = sys.stdout.write
    out(
        f"bundle {doc['bundle_id']} ({doc['format']}, format {doc['format_version']})\n"
        f"  from      {doc['source_mirror_id']}"
        + (f" for site {doc['site']}" if doc["site"] else "")
        + f", created {doc['created']}\n"
        f"  snapshots {doc['base_snapshot']} -> {doc['target_snapshot']}\n"
        f"  signature {doc['signature']}\n"
        f"  catalog   {len(doc['entries'])} records ({'ok' if doc['catalog_ok'] else 'DAMAGED'})\n"
        f"  blobs     {doc['blobs']} ({human_bytes(doc['blob_bytes'])})\n"
    )
    for p in doc["parts"]:
        out(f"  part      {p['name']}  {human_bytes(p['size'])}  sha256:{p['sha256']}\n")
    for e in doc["entries"][:200]:
        out(f"  {e['op']:<7} {e['kind']:<8} {e['path']}  {', '.join(e['versions'][:5])}\n")


@keys_app.command("generate")
def keys_generate(
    keyfile: Annotated[Path, typer.Argument(help="Private key file to create (mode 0600).")],
) -> int:
    """Create an ed25519 key pair for signing bundles (KEYFILE and KEYFILE.pub)."""
    from mirror.bundle.manifest import generate_keypair

    pub = generate_keypair(keyfile)
    sys.stdout.write(
        f"private key {keyfile} (keep it on the export host)\n"
        f"public key  {pub} (give it to sites: mirror import --verify-key)\n"
    )
    return 0
