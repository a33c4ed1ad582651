"""`mirror serve`: the mirror root to standard clients, read-only.

One ASGI app (app.py) on uvicorn: the OCI distribution pull API for docker/podman/skopeo
(registry_api.py), the NGC catalog API subset for NVIDIA's `ngc` tooling and for a downstream
`mirror sync` (ngc_api.py), and web pages (web.py). Loopback by default; TLS from a cert and
key; optional read tokens (auth.py); blobs re-verified before they are served (blobs.py).
Repositories are served without their registry host (`nvcr.io/nvidia/pytorch:24.01-py3` ->
`nvidia/pytorch:24.01-py3`); see repo_index.py.
"""

from mirror.serve.app import MirrorApp, create_app, run

__all__ = ["MirrorApp", "create_app", "run"]
