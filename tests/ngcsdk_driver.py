"""Drive NVIDIA's own NGC Python SDK (PyPI ``ngcsdk``) against an NGC-compatible server.

Run in a subprocess, one SDK call per run::

    python tests/ngcsdk_driver.py OP ARGS...

    model-list [PATTERN]        resource-list [PATTERN]        image-list [PATTERN]
    model-info REF              resource-info REF              image-info REF
    model-download REF DEST     resource-download REF DEST

REF is ``org/[team/]name[:version]`` (``repo[:tag]`` for images); PATTERN is what
``ngc registry ... list`` takes: a glob searches the catalog, a concrete name lists the
versions (tags) of that artifact. DEST must exist; files land in ``DEST/<name>_v<version>/``.

The SDK is configured only through its environment (docs: ngc-api.md §1-§2):

* ``NGC_CLI_API_URL`` (required, loopback): the server. The SDK only speaks HTTPS (it rewrites
  ``http://`` to ``https://``), so the server needs TLS;
* ``REQUESTS_CA_BUNDLE``: the CA that signed the server's certificate;
* ``NGC_CLI_HOME`` (required): where the SDK keeps ``.ngc/`` (guest token, token cache);
* ``NGC_CLI_API_KEY`` + ``NGC_CLI_ORG`` (+ ``NGC_CLI_AUTH_URL``, required and loopback with a
  non-``nvapi-`` key): key mode; without a key the SDK runs as a guest.

On success the SDK's result is printed to stdout as one JSON document (SDK objects turned
into plain dicts and lists with their own ``toDict()``; a tuple becomes a list) and the exit
status is 0. When the call raises, the SDK's error text goes to stderr as
``ExceptionClass: message`` and the exit status is 1; a download whose transfer status is not
``Completed`` prints its result and exits 3. Usage and environment errors exit 2.

Whatever the SDK prints itself (warnings, progress) is diverted to stderr so that stdout holds
only the JSON document.

Shims: none are needed for ngcsdk 4.37.0 used this way. ngc-api.md §0 needed two (a no-op
``argcomplete`` module and null-tracer methods) because it drove the CLI's argparse runner
(``ngcbase.command.basecli``, which imports argcomplete and wraps commands in
``trace_command``); ``ngcsdk.Client`` imports neither, and its tracer is off for the "sdk" build.

One guard is installed that is not about compatibility but safety: before the SDK is imported,
``socket`` is patched so that name lookups and connections to anything but loopback fail
(:func:`forbid_non_loopback_network`). The environment checks catch a wrong server URL early;
the guard also covers URLs the server hands out (presigned downloads) and anything the SDK
might contact on its own. Proxy variables must not be set: the SDK passes
``urllib.request.getproxies()`` explicitly on every API request, which makes ``requests``
ignore ``NO_PROXY`` and send even loopback calls to the proxy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import errno
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit

USAGE = __doc__.split("The SDK is configured")[0] if __doc__ else ""

#: op -> (registry attribute, SDK method, number of required args, number of optional args)
OPS: dict[str, tuple[str, str, int, int]] = {
    "model-list": ("model", "list", 0, 1),
    "model-info": ("model", "info", 1, 0),
    "model-download": ("model", "download_version", 2, 0),
    "resource-list": ("resource", "list", 0, 1),
    "resource-info": ("resource", "info", 1, 0),
    "resource-download": ("resource", "download_version", 2, 0),
    "image-list": ("image", "list", 0, 1),
    "image-info": ("image", "info", 1, 0),
}


class UsageError(Exception):
    """Bad arguments or environment (exit status 2)."""


def is_loopback_host(host: str | bytes | None) -> bool:
    """Whether host is ``localhost`` or a loopback IP literal (no name is resolved)."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not host:
        return False
    host = host.strip("[]").split("%")[0]  # "[::1]", "fe80::1%lo"
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def forbid_non_loopback_network() -> None:
    """Make every name lookup or connection to a non-loopback host fail with an OSError.

    Patched: ``socket.getaddrinfo`` (used by requests/urllib3, aiohttp and asyncio for names)
    and ``socket.socket.connect``/``connect_ex`` (every TCP/UDP connection, by name or address).
    Unix sockets are left alone.
    """
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(host: object) -> OSError:
        return OSError(errno.ENETUNREACH, f"ngcsdk_driver: no network beyond loopback ({host})")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not is_loopback_host(host):
            raise socket.gaierror(socket.EAI_NONAME, f"ngcsdk_driver: not loopback: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback_host(address[0]):
            raise refuse(address[0])

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign, assignment]


def _require_loopback(var: str) -> None:
    """Refuse a URL that is missing or not on loopback: the driver must never go out."""
    url = os.environ.get(var, "")
    if not url:
        raise UsageError(f"{var} must be set (the SDK's default is NVIDIA's real service)")
    host = urlsplit(url if "://" in url else f"https://{url}").hostname
    if not is_loopback_host(host):
        raise UsageError(f"{var}={url!r}: only loopback servers are allowed")


def check_environment() -> None:
    """Validate the environment before the SDK is imported (it reads it at import time)."""
    _require_loopback("NGC_CLI_API_URL")
    if os.environ.get("NGC_CLI_SEARCH_SERVICE_URL"):
        _require_loopback("NGC_CLI_SEARCH_SERVICE_URL")
    if not os.environ.get("NGC_CLI_HOME"):
        raise UsageError("NGC_CLI_HOME must be set (else the SDK writes to ~/.ngc)")
    key = os.environ.get("NGC_CLI_API_KEY") or os.environ.get("NGC_API_KEY")
    if key and not key.startswith("nvapi-"):
        _require_loopback("NGC_CLI_AUTH_URL")  # a legacy key is exchanged for a token there
    proxies = sorted(
        k
        for k, v in os.environ.items()
        if k.lower().endswith("_proxy") and k.lower() != "no_proxy" and v
    )
    if proxies:
        raise UsageError(f"unset {', '.join(proxies)}: the SDK would send loopback calls there")


def to_plain(obj: Any) -> Any:
    """Turn an SDK result into JSON-serialisable dicts, lists and scalars."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, dict):  # includes the SDK's DotDict (transfer results)
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset | Iterator):
        return [to_plain(v) for v in obj]
    to_dict = getattr(obj, "toDict", None)  # the SDK's generated data classes
    if callable(to_dict):
        return to_plain(to_dict())
    if hasattr(obj, "__dict__"):
        return {k: to_plain(v) for k, v in vars(obj).items() if not k.startswith("_")}
    return str(obj)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (Python and fd 1) to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def call_sdk(op: str, args: list[str]) -> Any:
    """Build an ``ngcsdk.Client`` from the environment and run one registry call."""
    import ngcsdk

    kind, method, _, _ = OPS[op]
    client = ngcsdk.Client()
    api = getattr(client.registry, kind)
    func: Callable[..., Any] = getattr(api, method)
    if method == "download_version":
        return func(args[0], destination=args[1])
    return func(*args)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in OPS:
        print(USAGE, file=sys.stderr)
        return 2
    op, args = argv[0], argv[1:]
    _, _, required, optional = OPS[op]
    try:
        if not required <= len(args) <= required + optional:
            raise UsageError(f"{op} takes {required}..{required + optional} arguments")
        if op.endswith("-download") and not Path(args[1]).is_dir():
            raise UsageError(f"destination {args[1]!r} is not a directory")
        check_environment()
    except UsageError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return 2
    forbid_non_loopback_network()
    try:
        with stdout_to_stderr():
            result = to_plain(call_sdk(op, args))
    except Exception as exc:  # the SDK's errors: NgcException and friends, requests errors
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1, sort_keys=True))
    if op.endswith("-download") and str(result.get("status", "")).upper() != "COMPLETED":
        print(f"download status: {result.get('status')}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
