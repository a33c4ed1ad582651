"""Debian's dockerd as a test peer: a private daemon (own data root, socket and CLI config) that
never touches the host's docker, started once per test session.

dockerd needs root; on a developer machine without root or without docker.io the tests that use
it skip, in CI (CI=true) they fail (see `.ci/run`, which installs docker.io).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import pytest


class Dockerd:
    """`with Dockerd() as d: d.docker("pull", ...)`; everything lives under one /tmp directory
    (short: the daemon's unix socket paths are capped at 108 bytes)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dk-", dir="/tmp"))
        self.sock = self.dir / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None
        loopback = "127.0.0.1,localhost"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.dir / "home"),
            "DOCKER_HOST": f"unix://{self.sock}",
            "DOCKER_CONFIG": str(self.dir / "cli"),  # logins stay in here
            "NO_PROXY": loopback,
            "no_proxy": loopback,
        }

    def __enter__(self) -> Dockerd:
        (self.dir / "daemon.json").write_text(json.dumps({}))  # not /etc/docker/daemon.json
        self.log = open(self.dir / "dockerd.log", "wb")  # noqa: SIM115 - closed in __exit__
        d = self.dir
        self.proc = subprocess.Popen(
            ["dockerd", f"--config-file={d}/daemon.json", f"--data-root={d}/root"]
            + [f"--exec-root={d}/exec", f"--pidfile={d}/dockerd.pid", f"--host=unix://{self.sock}"]
            + ["--storage-driver=vfs", "--bridge=none", "--iptables=false", "--ip6tables=false"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.dir / "dockerd.log").read_text(errors="replace")[-2000:]
                self.__exit__()
                raise RuntimeError(f"dockerd did not start:\n{tail}")
            time.sleep(0.2)
        return self

    def docker(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["docker", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def docker_bytes(self, *args: str) -> bytes:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def require_dockerd() -> None:
    """Skip (locally) or fail (CI=true) when a private dockerd cannot run here."""
    missing = [t for t in ("dockerd", "docker") if shutil.which(t) is None]
    why = f"{' and '.join(missing)} not installed (Debian docker.io)" if missing else None
    if why is None and os.geteuid() != 0:
        why = "dockerd needs root"
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}: required in CI (see .ci/run)")
        pytest.skip(why)
