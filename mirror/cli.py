"""The `mirror` command line: parse, call a service, render. The only module that prints.

Exit codes (DESIGN.md): 0 ok · 1 unexpected · 2 usage/config · 3 upstream unreachable ·
4 integrity · 5 lock held · 6 partial. `main()` catches our error tree once, prints the message
and its hint to stderr and exits with the error's code; tracebacks only with `--debug`.

Heavy imports (SQLAlchemy, httpx) happen inside the commands that need them, so commands that
do not touch them (and `--help`) start fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from mirror.errors import MirrorError, PartialRunError, UsageError
from mirror.render import human_bytes

app = typer.Typer(
    name="mirror",
    help="Offline mirror and indexer for the NVIDIA NGC catalog.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Catalog database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
index_app = typer.Typer(help="Search index maintenance.", no_args_is_help=True)
app.add_typer(index_app, name="index")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (TOML). Default: $MIRROR_CONFIG or built-in.",
        dir_okay=False,
    ),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Mirror root. Default: $MIRROR_HOME or the user data dir."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON document.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing unless something fails.")
]


class State:
    config: Path | None = None
    home: Path | None = None
    verbose: int = 0
    debug: bool = False


STATE = State()


@app.callback()
def _root(
    config: ConfigOpt = None,
    home: HomeOpt = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output.")
    ] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    STATE.config, STATE.home, STATE.verbose, STATE.debug = config, home, verbose, debug


def _settings() -> Any:
    from mirror.config import environ_snapshot, load_settings

    return load_settings(STATE.config, environ_snapshot(), home=STATE.home)


def _setup_logging(quiet: bool = False) -> None:
    level = (
        logging.ERROR
        if quiet
        else (
            logging.DEBUG
            if STATE.verbose > 1
            else logging.INFO
            if STATE.verbose
            else logging.WARNING
        )
    )
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    # httpx logs full request URLs at INFO; presigned URLs carry signatures
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(level, logging.WARNING))


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


# -- sync -------------------------------------------------------------------------------------
@app.command()
def sync(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> int:
    """Snapshot NGC catalog metadata and fetch the selected files (cron-safe)."""
    _setup_logging(quiet)
    from mirror.progress import make_progress
    from mirror.sync import run_sync

    settings = _settings()
    progress = make_progress(enabled=not quiet and not as_json and sys.stderr.isatty())
    report = run_sync(settings, dry_run=dry_run, progress=progress)
    if as_json:
        _emit_json(report.as_dict())
    elif not quiet:
        _print_sync(report)
    if report.failures and not dry_run:
        raise PartialRunError(report.failures)
    return 0


def _print_sync(r: Any) -> None:
    out = sys.stdout.write
    if r.dry_run:
        out("plan (dry run, nothing changed)\n")
    else:
        out(f"sync run {r.run_id}: {r.outcome}, snapshot {r.snapshot_id}\n")
    out(
        f"  entries   {r.listed} listed: {r.new} new, {r.changed} changed, "
        f"{r.incomplete} incomplete, {r.unchanged} unchanged, {r.removed} removed\n"
    )
    out(f"  versions  {r.versions_selected} selected for download\n")
    out(f"  to fetch  {r.files_to_fetch} files, {human_bytes(r.bytes_to_fetch)}\n")
    out(f"  present   {r.files_present} files, {human_bytes(r.bytes_present)}\n")
    if not r.dry_run:
        out(
            f"  fetched   {r.files_fetched} files, {human_bytes(r.bytes_fetched)} "
            f"in {r.requests} requests\n"
        )
    for f in r.failures:
        out(f"  FAILED    {f}\n")


# -- status -----------------------------------------------------------------------------------
@app.command()
def status(
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs to show.")] = 10,
) -> int:
    """Show the last runs (the cron ledger) and what the mirror holds."""
    _setup_logging()
    from mirror import catalog
    from mirror.db import Database, open_catalog_db
    from mirror.paths import MirrorPaths

    settings = _settings()
    paths = MirrorPaths(settings.home)
    if not paths.db.exists():
        doc: dict[str, Any] = {"home": str(paths.root), "runs": [], "catalog": None}
    else:
        db = Database(open_catalog_db(paths.db))
        with db.session() as s:
            runs = [_run_dict(r) for r in catalog.last_runs(s, limit)]
            doc = {"home": str(paths.root), "runs": runs, "catalog": catalog.counts(s)}
        db.engine.dispose()
    if as_json:
        _emit_json(doc)
        return 0
    out = sys.stdout.write
    out(f"mirror root {doc['home']}\n")
    if doc["catalog"] is None:
        out("  no catalog yet: run `mirror sync`\n")
        return 0
    c = doc["catalog"]
    out(
        f"  {c['entries']} entries, {c['versions']} versions, {c['files_stored']}/{c['files']} "
        f"files stored, {c['blobs']} blobs ({human_bytes(c['blob_bytes'])}), "
        f"{c['snapshots']} snapshots\n"
    )
    for r in doc["runs"]:
        fetched = human_bytes(r["bytes_fetched"])
        out(
            f"  run {r['id']:>4}  {r['command']:<6} {r['outcome']:<11} {r['started_at']}"
            f"  {fetched:>10}  {len(r['failures'])} failed\n"
        )
        if r.get("error"):
            out(f"            error: {r['error']}\n")
    return 0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process of that id
    return True


def _run_dict(r: Any) -> dict[str, Any]:
    outcome = r.outcome
    if outcome == "running" and not _alive(r.pid):
        outcome = "interrupted"  # killed: the next writer records it so; say it already
    return {
        "id": r.id,
        "command": r.command,
        "outcome": outcome,
        "pid": r.pid,
        "started_at": r.started_at.isoformat() + "Z",
        "finished_at": r.finished_at.isoformat() + "Z" if r.finished_at else None,
        "snapshot_id": r.snapshot_id,
        "counts": r.counts,
        "bytes_fetched": r.bytes_fetched,
        "failures": r.failures,
        "error": r.error,
    }


@contextlib.contextmanager
def _open_store(*, lock: bool, command: str) -> Iterator[tuple[Any, Any]]:
    """(store, database) of an existing mirror, holding the writer lock if asked; both are
    released on the way out."""
    from mirror.blobstore import BlobStore
    from mirror.db import Database, open_catalog_db
    from mirror.fsutil import MirrorLock
    from mirror.paths import MirrorPaths

    settings = _settings()
    paths = MirrorPaths(settings.home)
    if not paths.db.exists():
        raise MirrorError(
            f"no mirror at {paths.root}", hint="run `mirror sync` first, or set MIRROR_HOME"
        )
    held = MirrorLock(paths.lock, command).acquire() if lock else None
    try:
        db = Database(open_catalog_db(paths.db))
        try:
            yield BlobStore(paths), db
        finally:
            db.engine.dispose()
    finally:
        if held:
            held.release()


# -- search / show ----------------------------------------------------------------------------
@app.command()
def search(
    query: Annotated[
        list[str],
        typer.Argument(help='Words; Whoosh syntax (AND, OR, NOT, field:value, "phrases").'),
    ],
    show_all: Annotated[
        bool, typer.Option("--all", "-a", help="List every member of each group.")
    ] = False,
    kind: Annotated[
        str | None, typer.Option("--kind", help="model, resource, image or chart.")
    ] = None,
    framework: Annotated[str | None, typer.Option("--framework", help="e.g. PyTorch.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="e.g. FP16.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="At most N groups.", min=1)
    ] = 20,
    as_json: JsonOpt = False,
) -> int:
    """Search the mirrored catalog offline; repeated entries collapse into one hit."""
    from mirror.searching import run_search

    doc = run_search(
        _home(), " ".join(query), kind=kind, framework=framework, precision=precision, limit=limit
    )
    if as_json:
        _emit_json(doc)
    else:
        from mirror.render import search_text

        sys.stdout.write(search_text(doc, show_all=show_all))
    return 0


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="org/[team/]name[:version]")],
    kind: Annotated[str | None, typer.Option("--kind", help="Disambiguate by kind.")] = None,
    as_json: JsonOpt = False,
) -> int:
    """One entry: versions, files with sizes and sha256, local availability, how to get it."""
    _setup_logging()
    from mirror.db import Database, open_catalog_db
    from mirror.paths import MirrorPaths
    from mirror.render import entry_text
    from mirror.show import entry_detail

    paths = MirrorPaths(_settings().home)
    if not paths.db.exists():
        raise MirrorError(
            f"no mirror at {paths.root}", hint="run `mirror sync` first, or set MIRROR_HOME"
        )
    db = Database(open_catalog_db(paths.db))
    try:
        doc = entry_detail(db, ref, kind=kind)
    finally:
        db.engine.dispose()
    if as_json:
        _emit_json(doc)
    else:
        sys.stdout.write(entry_text(doc))
    return 0


@index_app.command("rebuild")
def index_rebuild() -> int:
    """Rebuild the search index from the catalog (atomic swap; searches keep working)."""
    _setup_logging()
    from mirror.db import Database, open_catalog_db
    from mirror.fsutil import MirrorLock
    from mirror.indexing import rebuild_index
    from mirror.paths import MirrorPaths

    paths = MirrorPaths(_settings().home)
    if not paths.db.exists():
        raise MirrorError(
            f"no mirror at {paths.root}", hint="run `mirror sync` first, or set MIRROR_HOME"
        )
    with MirrorLock(paths.lock, "index rebuild"):
        db = Database(open_catalog_db(paths.db))
        try:
            report = rebuild_index(paths, db)
        finally:
            db.engine.dispose()
    sys.stdout.write(f"search index rebuilt: {report.written} entries\n")
    return 0


def _home() -> Path:
    """The mirror root without loading the full settings machinery (search start-up time)."""
    if STATE.home is not None:
        return STATE.home
    import os

    if (
        os.environ.get("MIRROR_HOME")
        or STATE.config is None
        and not os.environ.get("MIRROR_CONFIG")
    ):
        from mirror.paths import default_home

        return default_home(os.environ)
    return Path(_settings().home)


# -- serve ------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind ([serve] host: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="TCP port ([serve] port: 5000).")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate: serve https.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="Require one of these read tokens (one per line)."),
    ] = None,
    reverify: Annotated[
        str | None,
        typer.Option("--reverify", help="Re-hash blobs before serving: first, always, never."),
    ] = None,
) -> int:
    """Serve the mirror read-only: registry API (docker/podman/skopeo), NGC API (ngc tooling,
    downstream mirrors) and web pages, on one port."""
    _setup_logging()
    from mirror.config import REVERIFY
    from mirror.paths import MirrorPaths
    from mirror.serve import run
    from mirror.serve.auth import read_token_file

    settings = _settings()
    conf = settings.serve
    paths = MirrorPaths(settings.home)
    if not paths.db.exists():
        raise MirrorError(
            f"no mirror at {paths.root}", hint="run `mirror sync` first, or set MIRROR_HOME"
        )
    cert = str(tls_cert) if tls_cert else conf.tls_cert
    key = str(tls_key) if tls_key else conf.tls_key
    if bool(cert) != bool(key):
        raise UsageError("--tls-cert and --tls-key go together", hint="give both or neither")
    for pem in (cert, key):
        if pem and not Path(pem).is_file():
            raise UsageError(f"no such file: {pem}", hint="give the PEM files of the certificate")
    policy = reverify or conf.reverify
    if policy not in REVERIFY:
        raise UsageError(f"unknown --reverify {policy!r}", hint=f"use {', '.join(REVERIFY)}")
    tokens_path = token_file or (Path(conf.token_file) if conf.token_file else None)
    tokens = read_token_file(tokens_path) if tokens_path else None
    # like every other command, bring an older catalog schema and search index up to date
    # first (the server itself never writes); a sync holding the lock finishes that for us
    from mirror.db import open_catalog_db
    from mirror.errors import LockHeldError
    from mirror.searching import ensure_index

    open_catalog_db(paths.db).dispose()
    try:
        ensure_index(paths)
    except LockHeldError as exc:
        logging.getLogger("mirror.serve").warning(
            "search index not rebuilt now (%s); the next sync rebuilds it", exc.message
        )
    bind_host = host or conf.host
    bind_port = conf.port if port is None else port
    scheme = "https" if cert else "http"
    shown = f"[{bind_host}]" if ":" in bind_host else bind_host
    sys.stderr.write(
        f"serving {paths.root} read-only on {scheme}://{shown}:{bind_port}/ "
        f"(registry /v2/, NGC API, web){' with read tokens' if tokens else ''}\n"
    )
    run(
        paths.root,
        host=bind_host,
        port=bind_port,
        tokens=tokens,
        token_file=tokens_path,
        reverify=policy,
        tls_cert=cert,
        tls_key=key,
    )
    return 0


# -- db ---------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> int:
    """Create the catalog database or migrate it to the current schema."""
    _setup_logging()
    from mirror.db import current_revision, make_engine, sqlite_url, upgrade
    from mirror.paths import MirrorPaths

    paths = MirrorPaths(_settings().home)
    paths.root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(sqlite_url(paths.db))
    changed = upgrade(engine)
    rev = current_revision(engine)
    engine.dispose()
    sys.stdout.write(f"{paths.db}: schema {'upgraded to' if changed else 'already at'} {rev}\n")
    return 0


# -- demo -------------------------------------------------------------------------------------
@app.command()
def demo(
    home: Annotated[Path, typer.Option("--dir", help="Where the demo mirror goes.")] = Path(
        "mirror-demo"
    ),
) -> int:
    """Try the whole flow offline: serve a built-in sample catalog on 127.0.0.1 and sync it."""
    _setup_logging()
    from mirror.demo import run_demo

    run_demo(home, out=sys.stdout.write)
    return 0


# the other command modules register themselves on `app`
from mirror import cli_bundles, cli_store  # noqa: E402

__all__ = ["app", "cli_bundles", "cli_store", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="mirror", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except (click.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except MirrorError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last line of defence: one line, not a traceback
        if debug:
            raise
        sys.stderr.write(
            f"unexpected error: {type(exc).__name__}: {exc}\n"
            "hint: rerun with --debug for a traceback and report it\n"
        )
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
