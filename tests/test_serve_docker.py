"""Real `docker pull` from `mirror serve`: Debian's dockerd (a private instance) as the client.

The mirror root comes from a real `mirror sync` of docker-registry (see serve_peer.
synced_test_images); the daemon pulls over plain http (docker treats 127.0.0.0/8 as an insecure
registry), and files read back out of a created container are compared with the layers pushed.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_peer import Dockerd, require_dockerd
from tests.registry_peer import Layout
from tests.serve_peer import ServeThread, synced_test_images
from tests.test_image_support import index_refs


@pytest.fixture(scope="module")
def docker() -> Iterator[Dockerd]:
    require_dockerd()
    with Dockerd() as d:
        yield d


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Layout]:
    return synced_test_images(tmp_path_factory.mktemp("docker"))


def _pushed_file(layout: Layout, name: str) -> bytes:
    """The bytes of `name` as pushed: found in whichever layer blob holds it."""
    for blob in layout.blobs.values():
        if blob[:2] != b"\x1f\x8b":
            continue
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
            if name in tar.getnames():
                member = tar.extractfile(name)
                assert member is not None
                return member.read()
    raise AssertionError(f"no pushed layer holds {name}")


def _container_file(docker: Dockerd, ref: str, name: str) -> bytes:
    """Create (not run) a container from `ref` and copy `name` out of its filesystem."""
    cid = docker.docker("create", ref, "/nothing-runs").stdout.strip()
    try:
        packed = docker.docker_bytes("cp", f"{cid}:/{name}", "-")
    finally:
        docker.docker("rm", "-f", cid, check=False)
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def _config_digest(layout: Layout, manifest_digest: str) -> str:
    return str(json.loads(layout.blobs[manifest_digest])["config"]["digest"])


def _stored_digest(root: Path, repo_tag: str) -> str:
    (digest,) = [d for ref, d in index_refs(root).items() if ref.endswith("/" + repo_tag)]
    return digest


def test_docker_pulls_by_tag_and_the_container_holds_the_pushed_files(
    docker: Dockerd, synced: tuple[Path, Layout]
) -> None:
    root, layout = synced
    manifest = layout.tags["single"]["digest"]
    with ServeThread(root) as srv:
        ref = f"{srv.host}/test/single:v1"
        docker.docker("pull", ref)
        (info,) = json.loads(docker.docker("image", "inspect", ref).stdout)
        assert info["Id"] == _config_digest(layout, manifest)  # docker's image id
        assert f"{srv.host}/test/single@{manifest}" in info["RepoDigests"]
        for name in ("base.bin", "amd64.bin", "small.bin"):
            assert _container_file(docker, ref, name) == _pushed_file(layout, name)
        docker.docker("rmi", "-f", ref)


def test_docker_pulls_by_digest_a_schema2_image_and_an_index(
    docker: Dockerd, synced: tuple[Path, Layout]
) -> None:
    root, layout = synced
    with ServeThread(root) as srv:
        # test/docker:v1 is the Docker schema2 form of `single`; pulled by its stored digest
        v2s2 = _stored_digest(root, "test/docker:v1")
        by_digest = f"{srv.host}/test/docker@{v2s2}"
        docker.docker("pull", by_digest)
        (info,) = json.loads(docker.docker("image", "inspect", by_digest).stdout)
        assert by_digest in info["RepoDigests"]
        assert info["Id"] == _config_digest(layout, layout.tags["single"]["digest"])
        # test/multi:1.0 is an index (mirrored for linux/amd64 only): docker picks amd64
        multi = f"{srv.host}/test/multi:1.0"
        docker.docker("pull", "--platform", "linux/amd64", multi)
        (info,) = json.loads(docker.docker("image", "inspect", multi).stdout)
        assert info["Architecture"] == "amd64"
        assert f"{srv.host}/test/multi@{_stored_digest(root, 'test/multi:1.0')}" in (
            info["RepoDigests"]
        )
        assert _container_file(docker, multi, "amd64.bin") == _pushed_file(layout, "amd64.bin")
        # the arm64 image was not mirrored: its manifest is unknown here, nothing is pulled
        missing = docker.docker("pull", "--platform", "linux/arm64", multi, check=False)
        assert missing.returncode != 0 and "manifest unknown" in missing.stderr
        docker.docker("rmi", "-f", by_digest, multi, check=False)


def test_docker_login_with_a_read_token(
    docker: Dockerd, synced: tuple[Path, Layout], tmp_path: Path
) -> None:
    root, layout = synced
    token = "read-token-for-docker-0123456789"
    tokens = tmp_path / "tokens"
    tokens.write_text(token + "\n")
    with ServeThread(root, token_file=tokens) as srv:
        ref = f"{srv.host}/test/single:v1"
        refused = docker.docker("pull", ref, check=False)
        assert refused.returncode != 0
        assert "unauthorized" in refused.stderr.lower() or "no basic auth" in refused.stderr
        wrong = docker.docker(
            "login", "-u", "site", "--password-stdin", srv.host, stdin="wrong\n", check=False
        )
        assert wrong.returncode != 0
        docker.docker("login", "-u", "site", "--password-stdin", srv.host, stdin=token + "\n")
        docker.docker("pull", ref)
        (info,) = json.loads(docker.docker("image", "inspect", ref).stdout)
        assert f"{srv.host}/test/single@{layout.tags['single']['digest']}" in info["RepoDigests"]
        docker.docker("logout", srv.host)
        docker.docker("rmi", "-f", ref)
