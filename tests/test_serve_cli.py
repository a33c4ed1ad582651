"""`mirror serve` as a process: flags, config, TLS, token file, clear refusals."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mirror.fakengc import FakeNGC, seed_catalog
from tests.conftest import REPO, cli_env, mirror_cmd, run_mirror, wait_for
from tests.registry_peer import free_port
from tests.tls_certs import make_tls


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    home = tmp_path_factory.mktemp("servecli") / "mirror"
    with FakeNGC(seed_catalog(limit=3)) as fake:
        env = cli_env(home, fake.url, MIRROR_NGC_KINDS="model")
        done = run_mirror(["sync"], env)
        assert done.returncode == 0, done.stderr
    return home, env


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "x.pem"], "go together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "no such file"),
        (["--reverify", "sometimes"], "unknown --reverify"),
        (["--token-file", "/nonexistent-tokens"], "cannot read the token file"),
    ],
)
def test_bad_flags_exit_2_with_a_hint(
    synced: tuple[Path, dict[str, str]], args: list[str], message: str
) -> None:
    _, env = synced
    done = run_mirror(["serve", "--port", str(free_port()), *args], env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_no_mirror_yet_is_a_clear_error(tmp_path: Path) -> None:
    done = run_mirror(["serve"], cli_env(tmp_path / "empty", "http://127.0.0.1:9"), timeout=60)
    assert done.returncode != 0 and "mirror sync" in done.stderr
    assert not (tmp_path / "empty").exists()


def test_serves_https_with_a_token_file(
    synced: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, env = synced
    tls = make_tls(tmp_path / "tls")
    tokens = tmp_path / "tokens"
    tokens.write_text("# site tokens\nfirst-token\n\nsecond-token\n")
    port = free_port()
    config = tmp_path / "serve.toml"
    config.write_text(f'[serve]\nport = {port}\ntls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n')
    proc = subprocess.Popen(
        mirror_cmd("--config", str(config), "serve", "--token-file", str(tokens)),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"https://127.0.0.1:{port}"
        with httpx.Client(
            base_url=url, verify=ssl.create_default_context(cafile=str(tls.ca)), trust_env=False
        ) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    first = client.get("/v2/")
                    break
                except httpx.ConnectError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)
            assert first.status_code == 401
            assert client.get("/v2/", auth=("u", "second-token")).status_code == 200
            assert client.get("/v2/products", auth=("u", "first-token")).status_code == 200
            # rotate without a restart: revoke first-token, add third-token
            tokens.write_text("second-token\nthird-token\n")
            wait_for(
                lambda: client.get("/v2/", auth=("u", "first-token")).status_code == 401,
                timeout=20,
                what="the revoked token to be refused",
            )
            assert client.get("/v2/", auth=("u", "third-token")).status_code == 200
            # a broken edit (no token left) keeps the previous tokens
            tokens.write_text("# nothing\n")
            time.sleep(1.5)
            assert client.get("/v2/", auth=("u", "second-token")).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"https://127.0.0.1:{port}/" in err and "with read tokens" in err
    assert "first-token" not in err and "second-token" not in err and "third-token" not in err
    assert "read tokens reloaded" in err and "keeping the previous tokens" in err


def test_an_outdated_search_index_is_rebuilt_at_start(
    synced: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, env = synced
    shutil.rmtree(home / "search")  # as after an upgrade that changed the index format
    with _serving(env) as (_, client, err):
        page = client.get("/search", params={"q": "bert"})
        assert page.status_code == 200 and "/entry/model/" in page.text
    assert "rebuilding it from the catalog" in err[0]
    assert (home / "search" / "current").exists()


@contextlib.contextmanager
def _serving(env: dict[str, str]) -> Iterator[tuple[int, httpx.Client, list[str]]]:
    """A real `mirror serve` process on a free port, answering: (port, client, [its stderr,
    filled in once it stopped])."""
    port = free_port()
    proc = subprocess.Popen(
        mirror_cmd("serve", "--port", str(port)),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err: list[str] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            wait_for(lambda: _up(client), timeout=60, what="mirror serve to answer")
            yield port, client, err
    finally:
        proc.terminate()
        err.append(proc.communicate(timeout=30)[1])


def _up(client: httpx.Client) -> bool:
    try:
        return client.get("/v2/").status_code == 200
    except httpx.TransportError:
        return False


def test_tls_handshakes_on_the_plain_port_are_explained_once(
    synced: tuple[Path, dict[str, str]],
) -> None:
    """docker and podman try https first on an insecure registry: one hint, not a warning per
    pull."""
    import socket

    _, env = synced
    hello = bytes.fromhex("160301020001") + b"\x01\xfc\x03\x03" + bytes(40)  # a TLS ClientHello
    with _serving(env) as (port, client, err):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(hello)
                sock.recv(1024)  # the server answers 400 and closes
        assert client.get("/v2/").status_code == 200  # and keeps serving
    assert err[0].count("not HTTP (docker and podman try https first") == 1, err
    assert "Invalid HTTP request received" not in err[0]
