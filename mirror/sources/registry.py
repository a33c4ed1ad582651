"""A pull-only OCI distribution client (nvcr.io and any registry speaking the same API).

It reads what a mirror needs and nothing more: the `/v2/` probe, tag lists, manifests and
blobs (oci.md §1). Everything it returns is verified before the caller sees it:
- manifests are kept byte-exact; their sha256 must match the requested digest and, when
  present, `Docker-Content-Digest` (oci.md §4: by-tag responses are not checked by skopeo,
  so the mirror must do it); schema1 is refused (oci.md §1.3);
- blobs stream into the BlobStore, which checks size and digest before publishing by rename;
  a broken body resumes with Range (HttpClient.download);
- every digest read from a manifest passes `validate_digest` before it can name a path.

Authentication lives in registry_auth.py; this module only says which scope a request needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from mirror.blobstore import BlobStore, BlobWriter, fetch_into
from mirror.config import Secret
from mirror.errors import DigestError, IntegrityError, ProtocolError, UsageError, redact_url
from mirror.http import HttpClient
from mirror.paths import validate_digest
from mirror.sources.registry_auth import RegistryAuth, origin

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
# Every type we can store; distribution 2.8 answers 404 for an OCI manifest, or converts a
# schema2 one to schema1, when its type is missing here (oci.md §1.3). No schema1 on purpose.
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
MAX_MANIFEST_BYTES = 4 << 20  # what containers/image accepts; registries SHOULD allow 4 MB
MAX_TAG_PAGES = 10_000
NVCR_URL = "https://nvcr.io"
NVCR_USERNAME = "$oauthtoken"

_NAME = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_HASHES: Mapping[str, Callable[[bytes], Any]] = {
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


@dataclass(frozen=True)
class Platform:
    """Where an index entry runs (image-spec `platform`)."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        tail = f"/{self.variant}" if self.variant else ""
        return f"{self.os}/{self.architecture}{tail}"


@dataclass(frozen=True)
class Descriptor:
    """A verified-shape pointer to content: digest (validated), size, media type."""

    digest: str
    size: int
    media_type: str
    platform: Platform | None = None


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry sent it, with its checked digest."""

    data: bytes
    media_type: str
    digest: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class ImageBlobs:
    """What an image manifest points at: one config and its layers, in order."""

    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def all(self) -> tuple[Descriptor, ...]:
        return (self.config, *self.layers)


def validate_repo(repo: str) -> str:
    """A repository name as distribution defines it (oci.md §1.2), safe inside a URL path."""
    if not isinstance(repo, str) or len(repo) > 255 or not _NAME.fullmatch(repo):
        raise UsageError(
            f"invalid repository name {repo[:80]!r}",
            hint="use lowercase path components like nvidia/pytorch",
        )
    return repo


def validate_ref(ref: str) -> str:
    """A tag or a `sha256:` digest; anything else never reaches a URL."""
    if ref.startswith("sha256:"):
        return validate_digest(ref)
    if not _TAG.fullmatch(ref):
        raise UsageError(f"invalid tag or digest {ref[:80]!r}", hint="tags match [A-Za-z0-9_.-]")
    return ref


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json_object(data: bytes, what: str, url: str | None = None) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise ProtocolError(f"{what} is not valid JSON", url=url) from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} is not a JSON object", url=url)
    return doc


def _descriptor(raw: Any, what: str) -> Descriptor:
    """Check one descriptor from upstream; its digest must be safe to use as a path."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"{what}: descriptor is not a JSON object")
    raw_digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType")
    try:
        digest = validate_digest(raw_digest if isinstance(raw_digest, str) else repr(raw_digest))
    except DigestError:
        raise ProtocolError(
            f"{what}: unsupported or malformed digest {str(raw_digest)[:80]!r}",
            hint="only sha256 digests are mirrored",
        ) from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"{what}: descriptor {digest} has no valid size")
    if not isinstance(media_type, str) or not media_type:
        raise ProtocolError(f"{what}: descriptor {digest} has no mediaType")
    platform = None
    plat = raw.get("platform")
    if isinstance(plat, dict):
        os_, arch, variant = plat.get("os"), plat.get("architecture"), plat.get("variant")
        if isinstance(os_, str) and isinstance(arch, str):
            platform = Platform(os_, arch, variant if isinstance(variant, str) else None)
    return Descriptor(digest, size, media_type, platform)


def platforms(data: bytes) -> list[Descriptor]:
    """The child manifests of an image index / Docker manifest list, with their platforms."""
    doc = _json_object(data, "image index")
    children = doc.get("manifests")
    if not isinstance(children, list):
        raise ProtocolError("image index has no 'manifests' list")
    return [_descriptor(c, f"image index entry {i}") for i, c in enumerate(children)]


def image_blobs(data: bytes) -> ImageBlobs:
    """The config and layer descriptors of an image manifest (OCI or Docker schema2)."""
    doc = _json_object(data, "image manifest")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ProtocolError("image manifest has no 'layers' list")
    return ImageBlobs(
        config=_descriptor(doc.get("config"), "image config"),
        layers=tuple(_descriptor(layer, f"layer {i}") for i, layer in enumerate(layers)),
    )


def next_link(value: str | None, current_url: str) -> str | None:
    """The absolute `rel="next"` target of an RFC 8288 `Link` header, if any."""
    if not value:
        return None
    for m in _LINK.finditer(value):
        params = m.group(2).lower().replace(" ", "")
        if 'rel="next"' in params or "rel=next" in params:
            return urljoin(current_url, str(m.group(1)).strip())
    return None


class RegistryClient:
    """Reads one registry (e.g. https://nvcr.io) on top of the shared HttpClient."""

    def __init__(
        self,
        url: str,
        http: HttpClient,
        *,
        username: str | None = None,
        password: Secret | None = None,
    ) -> None:
        parts = urlsplit(url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path.strip("/")
            or parts.query
            or parts.username
        ):
            raise UsageError(
                f"registry URL must be scheme://host[:port], got {redact_url(url)!r}",
                hint="for example https://nvcr.io",
            )
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.http = http
        self.auth = RegistryAuth(self.url, http, username=username, password=password)

    @classmethod
    def nvcr(
        cls, http: HttpClient, api_key: Secret | None, *, url: str = NVCR_URL
    ) -> RegistryClient:
        """nvcr.io: user `$oauthtoken` with the NGC API key, or anonymous without a key."""
        if api_key is None:
            return cls(url, http)
        return cls(url, http, username=NVCR_USERNAME, password=api_key)

    # -- plumbing ---------------------------------------------------------------------------
    def _get(
        self, url: str, scope: str, *, accept: str | None, max_bytes: int
    ) -> tuple[bytes, dict[str, str]]:
        body, headers, _ = self.http.get_bytes(
            url,
            headers=lambda: self.auth.headers(scope),
            on_challenge=self.auth.handler(scope),
            accept=accept,
            max_bytes=max_bytes,
        )
        return body, headers

    @staticmethod
    def _scope(repo: str) -> str:
        return f"repository:{repo}:pull"

    # -- API --------------------------------------------------------------------------------
    def probe(self) -> None:
        """GET /v2/: the registry speaks the API and our credentials (if any) are accepted."""
        self._get(f"{self.url}/v2/", "", accept="application/json", max_bytes=1 << 20)

    def tags(self, repo: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of `repo`, following `Link` pages, or `n`/`last` when a page is full.

        distribution 2.8 ignores `n` and `last` and returns everything unsorted (oci.md §1.5);
        a page that brings nothing new ends the walk, so such servers cannot loop us.
        """
        validate_repo(repo)
        scope = self._scope(repo)
        base = f"{self.url}/v2/{repo}/tags/list"
        url = f"{base}?{urlencode({'n': page_size})}" if page_size else base
        found: list[str] = []
        seen: set[str] = set()
        for _ in range(MAX_TAG_PAGES):
            body, headers = self._get(url, scope, accept="application/json", max_bytes=16 << 20)
            page = _json_object(body, f"tag list of {repo}", url).get("tags") or []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise ProtocolError(f"tag list of {repo} is not a list of strings", url=url)
            fresh = [t for t in page if t not in seen]
            seen.update(fresh)
            for tag in fresh:
                # a tag later goes into a URL path: drop what the tag grammar does not allow
                if _TAG.fullmatch(tag):
                    found.append(tag)
                else:
                    log.warning("skipping invalid tag %r of %s", tag[:80], repo)
            link = next_link(headers.get("link"), url)
            if link is not None:
                if origin(link) != origin(self.url):
                    raise ProtocolError(
                        f"tag list Link points to another origin ({redact_url(link)});"
                        " refusing to follow it with registry credentials",
                        url=url,
                    )
            elif page_size and len(page) == page_size and fresh:
                link = f"{base}?{urlencode({'n': page_size, 'last': page[-1]})}"
            if link is None or not fresh:
                return found
            url = link
        raise ProtocolError(f"tag list of {repo} did not end after {MAX_TAG_PAGES} pages", url=url)

    def manifest(self, repo: str, ref: str) -> Manifest:
        """A manifest or index by tag or digest, byte-exact and digest-checked."""
        validate_repo(repo)
        validate_ref(ref)
        url = f"{self.url}/v2/{repo}/manifests/{ref}"
        body, headers = self._get(
            url, self._scope(repo), accept=MANIFEST_ACCEPT, max_bytes=MAX_MANIFEST_BYTES
        )
        name = f"{repo}@{ref}" if ref.startswith("sha256:") else f"{repo}:{ref}"
        media_type = self._media_type(body, headers.get("content-type", ""), name, url)
        digest = sha256_digest(body)
        if ref.startswith("sha256:") and digest != ref:
            raise IntegrityError(
                "manifest does not match its digest", expected=ref, actual=digest, subject=name
            )
        self._check_digest_header(headers.get("docker-content-digest"), body, digest, name, url)
        return Manifest(body, media_type, digest)

    @staticmethod
    def _media_type(body: bytes, content_type: str, name: str, url: str) -> str:
        ctype = content_type.split(";", 1)[0].strip().lower()
        try:
            doc = json.loads(body)
        except ValueError:
            raise ProtocolError(f"manifest of {name} is not valid JSON", url=url) from None
        if not isinstance(doc, dict):
            raise ProtocolError(f"manifest of {name} is not a JSON object", url=url)
        declared = doc.get("mediaType")
        if ctype in SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
            raise ProtocolError(
                f"{name} is a Docker schema1 manifest; schema1 is not supported",
                url=url,
                hint="schema1 is deprecated and refused by Docker and containerd 2; "
                "ask the publisher for a schema2/OCI image or leave this tag out",
            )
        served = ctype not in ("", "application/json")
        if isinstance(declared, str) and declared and served and declared != ctype:
            raise ProtocolError(
                f"manifest of {name} says mediaType {declared!r} but was served as {ctype!r}",
                url=url,
            )
        media_type = ctype if served else declared
        if media_type not in INDEX_TYPES | IMAGE_TYPES:
            raise ProtocolError(
                f"manifest of {name} has unsupported media type {str(media_type)[:100]!r}",
                url=url,
            )
        assert isinstance(media_type, str)
        return media_type

    @staticmethod
    def _check_digest_header(
        header: str | None, body: bytes, digest: str, name: str, url: str
    ) -> None:
        if not header:
            return
        algorithm, _, encoded = header.strip().partition(":")
        hasher = _HASHES.get(algorithm)
        if hasher is None or not re.fullmatch(r"[0-9a-f]+", encoded):
            raise ProtocolError(
                f"unusable Docker-Content-Digest {header[:100]!r} for {name}", url=url
            )
        actual = f"{algorithm}:{hasher(body).hexdigest()}"
        if actual != header.strip():
            raise IntegrityError(
                "manifest bytes do not match Docker-Content-Digest",
                expected=header.strip(),
                actual=actual if algorithm != "sha256" else digest,
                subject=name,
            )

    def fetch_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        store: BlobStore,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> str:
        """Stream a blob into `store` (resuming a partial), verify size+digest, publish it.

        Returns the digest. A blob already in the store is not fetched again. A partial left
        by an earlier run that fails verification is discarded and fetched once more whole.
        """
        validate_repo(repo)
        validate_digest(digest)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UsageError(f"invalid size {size!r} for blob {digest}")
        if store.has(digest):
            return digest
        scope = self._scope(repo)
        url = f"{self.url}/v2/{repo}/blobs/{digest}"

        def fetch(writer: BlobWriter) -> int:
            return self.http.download(
                url,
                writer,
                headers=lambda: self.auth.headers(scope),
                on_challenge=self.auth.handler(scope),
                on_progress=on_progress,
            )

        return fetch_into(store, digest, size, fetch, what=f"blob {digest}")[0]
