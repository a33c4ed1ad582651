"""A fake NVIDIA NGC catalog server (stdlib only) for tests, demos and benchmarks.

Typical use in a test::

    from mirror.fakengc import FakeNGC, Fault, seed_catalog

    with FakeNGC(seed_catalog(limit=5)) as fake:
        fake.add_fault(Fault(r"/versions\\?", status=500, times=1))
        ...  # point the client under test at fake.url
        assert fake.count(r"^/_dl/") == 3

Run as a process with ``python -m mirror.fakengc --seed``.
"""

from .catalog import (
    DEFAULT_DATE,
    FakeCatalog,
    FakeEntry,
    FakeFile,
    FakeVersion,
    iso_date,
    parse_iso_date,
    seed_catalog,
)
from .server import FakeNGC, Fault, RequestRecord

__all__ = [
    "DEFAULT_DATE",
    "FakeCatalog",
    "FakeEntry",
    "FakeFile",
    "FakeNGC",
    "FakeVersion",
    "Fault",
    "RequestRecord",
    "iso_date",
    "parse_iso_date",
    "seed_catalog",
]
