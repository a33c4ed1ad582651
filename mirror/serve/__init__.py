"""`mirror serve`: a read-only OCI registry (pull API) over a mirror root.

`create_app(root)` is a plain ASGI app; `run(root, host, port)` serves it with uvicorn on
loopback by default. Repositories are served without their registry host
(`nvcr.io/nvidia/pytorch:24.01-py3` -> `nvidia/pytorch:24.01-py3`); see repo_index.py.
"""

from mirror.serve.registry_api import RegistryApp, create_app, run

__all__ = ["RegistryApp", "create_app", "run"]
