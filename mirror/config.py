"""Settings: TOML file → frozen dataclasses, by one pure function.

Precedence: defaults < config file < `MIRROR_<SECTION>_<KEY>` environment < command-line flags
(flags are applied by the CLI with `dataclasses.replace`). Unknown keys are errors that name
`[section].key`. Nothing here reads the environment at import time.

The NGC API key comes from `NGC_API_KEY` (or `NGC_CLI_API_KEY`, as NVIDIA's CLI) or
`[ngc] api_key`; it is wrapped in `Secret` so it cannot leak through a repr or a log line.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirror.errors import ConfigError
from mirror.paths import default_home, names_a_registry

KINDS = ("model", "resource", "image")
# what a [[select]] fetches bytes for unless it names kinds: images are many GB each, so
# pulling them is always asked for explicitly (kinds = ["image"])
SELECT_KINDS = ("model", "resource")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(value: object, *, where: str = "size") -> int:
    """Parse 4GiB / 256MiB / 10GB / 1048576 into bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size like 4GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: size must not be negative")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ConfigError(f"{where}: expected a size like 4GiB or 500MB, got {value!r}")
    unit = (m.group(2) or "B").lower()
    return int(float(m.group(1)) * _UNITS[unit])


class Secret:
    """A string that never shows itself in repr/str (the NGC API key)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class NgcSettings:
    api_url: str = "https://api.ngc.nvidia.com"
    auth_url: str = "https://authn.nvidia.com"
    api_key: Secret | None = None
    org: str = ""
    team: str = ""
    kinds: tuple[str, ...] = KINDS
    search_page_size: int = 100
    # where NGC's container images live (selected tags are pulled from here with the API key)
    registry_url: str = "https://nvcr.io"
    platforms: tuple[str, ...] = ("linux/amd64",)


@dataclass(frozen=True)
class HttpSettings:
    timeout: float = 30.0
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 60.0
    concurrency: int = 4
    trust_env: bool = False
    # PEM file of CA certificates to trust in addition to the system's (an upstream `mirror
    # serve` with its own CA); empty = system trust only
    ca_bundle: str = ""


@dataclass(frozen=True)
class BundleSettings:
    verify_key: str = ""  # ed25519 public key file; when set, imports must verify with it
    require_signature: bool = False


REVERIFY = ("first", "always", "never")


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 5000
    tls_cert: str = ""  # PEM certificate (chain); with tls_key, serve https
    tls_key: str = ""
    # file of accepted read tokens, one per line ('#' comments); empty = reads are open
    token_file: str = ""
    # when blobs are re-hashed before they are served: "first" time per process (and after a
    # file changes), "always", or "never" (trust the store)
    reverify: str = "first"


@dataclass(frozen=True)
class Selection:
    """One `[[select]]` table: which entries get their bytes mirrored."""

    pattern: str = "*"
    kinds: tuple[str, ...] = SELECT_KINDS
    latest: int | None = 1
    max_size: int | None = None

    def matches(self, kind: str, path: str) -> bool:
        return kind in self.kinds and fnmatch.fnmatchcase(path, self.pattern)


@dataclass(frozen=True)
class RegistrySource:
    """One `[[registry]]` table: a plain OCI registry whose images are mirrored."""

    url: str
    name: str  # the reference prefix in index.json, e.g. "nvcr.io" or "127.0.0.1:5000"
    repositories: tuple[str, ...]
    tags: tuple[str, ...] = ("*",)
    latest: int | None = None
    platforms: tuple[str, ...] = ("linux/amd64",)
    max_size: int | None = None
    username: str | None = None
    password: Secret | None = None


@dataclass(frozen=True)
class Settings:
    home: Path
    ngc: NgcSettings = field(default_factory=NgcSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    bundle: BundleSettings = field(default_factory=BundleSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    select: tuple[Selection, ...] = ()
    registries: tuple[RegistrySource, ...] = ()
    source: str | None = None  # the config file these came from, for messages


def _check_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: expected an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"{where}: plain http is only accepted for loopback hosts, got {url!r}",
            hint="use https:// (the API key and catalog travel over this connection)",
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _coerce(value: Any, default: Any, typ: str, where: str) -> Any:
    if "Secret" in typ:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return Secret(value) if value else None
    if "tuple" in typ:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return tuple(value)
    if typ == "bool":
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if typ in ("int", "float"):
        try:
            num = int(value) if typ == "int" else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or num < 0:
            raise ConfigError(f"{where}: expected a non-negative number, got {value!r}")
        return num
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _section(cls: type, raw: Mapping[str, Any], name: str, env: Mapping[str, str]) -> Any:
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(
                f"unknown key [{name}].{key}", hint=f"valid keys: {', '.join(sorted(known))}"
            )
        values[key] = _coerce(value, known[key].default, str(known[key].type), f"[{name}].{key}")
    for key, f in known.items():
        env_value = env.get(f"MIRROR_{name.upper()}_{key.upper()}")
        if env_value is not None:
            values[key] = _coerce(
                env_value, f.default, str(f.type), f"MIRROR_{name.upper()}_{key.upper()}"
            )
    return cls(**values)


def _selection(raw: Any, i: int) -> Selection:
    where = f"[[select]] #{i + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    allowed = {"pattern", "kinds", "latest", "max_size"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {where}.{key}", hint=f"valid keys: {', '.join(sorted(allowed))}"
            )
    pattern = raw.get("pattern", "*")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}.pattern: expected a glob like 'nvidia/*'")
    kinds = _coerce(raw.get("kinds", list(SELECT_KINDS)), KINDS, "tuple", f"{where}.kinds")
    for k in kinds:
        if k not in KINDS:
            raise ConfigError(f"{where}.kinds: unknown kind {k!r}", hint=f"use {', '.join(KINDS)}")
    latest = raw.get("latest", 1)
    if latest is not None and (
        isinstance(latest, bool) or not isinstance(latest, int) or latest < 0
    ):
        raise ConfigError(f"{where}.latest: expected a whole number of versions (0 = all)")
    max_size = parse_size(raw["max_size"], where=f"{where}.max_size") if "max_size" in raw else None
    return Selection(pattern=pattern, kinds=kinds, latest=latest or None, max_size=max_size)


def load_settings(
    path: Path | None, environ: Mapping[str, str], *, home: Path | None = None
) -> Settings:
    """Build Settings from an optional TOML file and the environment. Pure: no I/O but the read.

    Args:
        path: the config file, or None for embedded defaults (MIRROR_CONFIG is honoured).
        environ: the environment to read MIRROR_* overrides and NGC_API_KEY from.
        home: the mirror root from a flag, overriding MIRROR_HOME and the file.
    """
    if path is None and environ.get("MIRROR_CONFIG"):
        path = Path(environ["MIRROR_CONFIG"])
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                "config file not found", path=str(path), hint="copy config.example.toml and edit it"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", path=str(path)) from None
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None
    try:
        return _build(raw, environ, home, str(path) if path else None)
    except ConfigError as exc:
        if path is not None and exc.path is None:
            raise ConfigError(exc.message, path=str(path), hint=exc.hint) from None
        raise


def _build(
    raw: dict[str, Any], environ: Mapping[str, str], home: Path | None, source: str | None
) -> Settings:
    allowed = {"home", "ngc", "http", "bundle", "serve", "select", "registry"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"unknown top-level key {key!r}", hint=f"valid: {', '.join(sorted(allowed))}"
            )
    ngc = _section(NgcSettings, raw.get("ngc", {}), "ngc", environ)
    api_key = environ.get("NGC_API_KEY") or environ.get("NGC_CLI_API_KEY")
    if api_key:
        ngc = _replace(ngc, api_key=Secret(api_key))
    for k in ngc.kinds:
        if k not in KINDS:
            raise ConfigError(f"[ngc].kinds: unknown kind {k!r}", hint=f"use {', '.join(KINDS)}")
    ngc = _replace(
        ngc,
        registry_url=_check_url(ngc.registry_url, "[ngc].registry_url"),
        api_url=_check_url(ngc.api_url, "[ngc].api_url"),
        auth_url=_check_url(ngc.auth_url, "[ngc].auth_url"),
    )
    http = _section(HttpSettings, raw.get("http", {}), "http", environ)
    if http.concurrency < 1:
        raise ConfigError("[http].concurrency: must be at least 1")
    bundle = _section(BundleSettings, raw.get("bundle", {}), "bundle", environ)
    if bundle.verify_key:
        bundle = _replace(bundle, require_signature=True)
    serve = _section(ServeSettings, raw.get("serve", {}), "serve", environ)
    if serve.reverify not in REVERIFY:
        raise ConfigError(
            f"[serve].reverify: unknown policy {serve.reverify!r}",
            hint=f"use {', '.join(REVERIFY)}",
        )
    if bool(serve.tls_cert) != bool(serve.tls_key):
        raise ConfigError("[serve]: tls_cert and tls_key go together", hint="set both or neither")
    if serve.port > 65535:
        raise ConfigError(f"[serve].port: {serve.port} is not a TCP port")
    select_raw = raw.get("select", [])
    if not isinstance(select_raw, list):
        raise ConfigError("select: use [[select]] tables")
    select = tuple(_selection(s, i) for i, s in enumerate(select_raw))
    if home is None:
        if environ.get("MIRROR_HOME"):
            home = Path(environ["MIRROR_HOME"]).expanduser()
        elif raw.get("home"):
            home = Path(str(raw["home"])).expanduser()
        else:
            home = default_home(environ)
    reg_raw = raw.get("registry", [])
    if not isinstance(reg_raw, list):
        raise ConfigError("registry: use [[registry]] tables")
    registries = tuple(_registry(r, i, environ) for i, r in enumerate(reg_raw))
    return Settings(
        home=home,
        ngc=ngc,
        http=http,
        bundle=bundle,
        serve=serve,
        select=select,
        registries=registries,
        source=source,
    )


def _registry(raw: Any, i: int, environ: Mapping[str, str]) -> RegistrySource:
    where = f"[[registry]] #{i + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    allowed = {
        "url",
        "name",
        "repositories",
        "tags",
        "latest",
        "platforms",
        "max_size",
        "username_env",
        "password_env",
    }
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {where}.{key}", hint=f"valid keys: {', '.join(sorted(allowed))}"
            )
    if not isinstance(raw.get("url"), str):
        raise ConfigError(f"{where}.url: required, e.g. https://nvcr.io")
    url = _check_url(raw["url"], f"{where}.url")
    parts = urlsplit(url)
    name = raw.get("name") or parts.netloc
    if not isinstance(name, str) or not names_a_registry(name) or "/" in name:
        raise ConfigError(
            f"{where}.name: {name!r} does not look like a registry host",
            hint='use a host name with a "." or ":" (e.g. "nvcr.io", "lab.example:5000") or '
            '"localhost": index.json names tags <name>/<repo>:<tag>, and by Docker\'s rule a '
            "first component without one is a repository namespace",
        )
    repos = _coerce(raw.get("repositories", []), (), "tuple", f"{where}.repositories")
    if not repos:
        raise ConfigError(f"{where}.repositories: list the repositories to mirror")
    tags = _coerce(raw.get("tags", ["*"]), (), "tuple", f"{where}.tags")
    platforms = _coerce(raw.get("platforms", ["linux/amd64"]), (), "tuple", f"{where}.platforms")
    latest = raw.get("latest", 0)
    if isinstance(latest, bool) or not isinstance(latest, int) or latest < 0:
        raise ConfigError(f"{where}.latest: expected a whole number of tags (0 = all)")
    max_size = parse_size(raw["max_size"], where=f"{where}.max_size") if "max_size" in raw else None
    user = password = None
    for key in ("username_env", "password_env"):
        var = raw.get(key)
        if var is not None and (not isinstance(var, str) or var not in environ):
            raise ConfigError(f"{where}.{key}: environment variable {var!r} is not set")
    if raw.get("username_env"):
        user = environ[raw["username_env"]]
    if raw.get("password_env"):
        password = Secret(environ[raw["password_env"]])
    return RegistrySource(
        url=url,
        name=str(name),
        repositories=repos,
        tags=tags,
        latest=latest or None,
        platforms=platforms,
        max_size=max_size,
        username=user,
        password=password,
    )


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def environ_snapshot() -> dict[str, str]:
    """The process environment as a plain dict (read only when the CLI starts)."""
    return dict(os.environ)
