"""Deterministic seed catalog built from the 2019 NGC model listing.

Everything here is a pure function of the listing and the arguments: names, metadata,
dates and file bytes. Tests rely on two builds being equal.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from importlib import resources

from .catalog import FakeCatalog, FakeEntry, FakeFile, FakeVersion, iso_date

_MODELS_FILE = "ngc-2019-models.txt"
_IMAGES_FILE = "ngc-2019-images.txt"
_IMAGES_EPOCH = datetime(2019, 3, 4, 8, 0, tzinfo=UTC)
# Repositories whose tags carry a "-py3" suffix, like the real framework containers.
_PY3_IMAGES = {"pytorch", "tensorflow", "mxnet", "tensorrt", "tensorrt-inference-server"}
_HPC_IMAGES = 18  # the listing starts with this many HPC application containers
_MODELS_EPOCH = datetime(2019, 1, 7, 9, 0, tzinfo=UTC)
_RESOURCES_EPOCH = datetime(2019, 2, 1, 14, 30, tzinfo=UTC)

# Framework words as they appear in display names; first match wins.
_FRAMEWORK_WORDS = (
    ("tensorflow", "TensorFlow"),
    ("pytorch", "PyTorch"),
    ("mxnet", "MXNet"),
    ("nemo", "NeMo"),
)

# (regex on the lower-cased display name, application); first match wins, so the more
# specific task words come before the backbone names.
_APPLICATIONS = (
    (r"squad", "Question Answering"),
    (r"pre-?training|bert", "Language Modeling"),
    (r"gnmt|transformer", "Translation"),
    (r"jasper|quartznet", "Speech Recognition"),
    (r"tacotron|waveglow", "Text To Speech"),
    (r"pix2pix", "Image Synthesis"),
    (r"maskrcnn", "Instance Segmentation"),
    (r"segmentation|annotation", "Segmentation"),
    (r"detectnet|fasterrcnn|ssd|object detection", "Object Detection"),
    (
        r"classification|resnet|inception|mobilenet|vgg|alexnet|googlenet|squeezenet",
        "Classification",
    ),
)

_WEIGHTS_FILE = {
    "TensorFlow": "model.ckpt.data-00000-of-00001",
    "PyTorch": "model.pt",
    "MXNet": "model.params",
    "NeMo": "model.nemo",
    "TLT": "model.tlt",
    "TensorRT": "model.onnx",
    "Clara Train": "models/model.ckpt",
}

# (name, display name, team, trainingFramework, precision, application) of the model
# scripts; names are chosen not to collide with any model name to keep tests unambiguous.
_RESOURCES = (
    ("bert_for_tensorflow", "BERT for TensorFlow", None, "TensorFlow", "FPBOTH", "NLP"),
    ("bert_for_pytorch", "BERT for PyTorch", None, "PyTorch", "FPBOTH", "NLP"),
    ("gnmt_v2_for_tensorflow", "GNMT v2 for TensorFlow", None, "TensorFlow", "FP16", "NLP"),
    (
        "resnet_50_v1_5_for_pytorch",
        "ResNet-50 v1.5 for PyTorch",
        None,
        "PyTorch",
        "FPBOTH",
        "CLASSIFICATION",
    ),
    ("ssd_v1_1_for_pytorch", "SSD v1.1 for PyTorch", None, "PyTorch", "FP16", "OBJECT_DETECTION"),
    ("mask_r_cnn_for_pytorch", "Mask R-CNN for PyTorch", None, "PyTorch", "FP32", "SEGMENTATION"),
    (
        "jasper_asr_for_pytorch",
        "Jasper ASR for PyTorch",
        None,
        "PyTorch",
        "FP16",
        "SPEECH_RECOGNITION",
    ),
    ("tlt_getting_started", "TLT Getting Started", "tlt", "Other", "FP32", "OTHER"),
)
_RESOURCE_FILES = ("README.md", "scripts/run_training.sh", "requirements.txt")


def _read_listing(filename: str) -> list[str]:
    data = resources.files(__package__ or "mirror.fakengc").joinpath("data")
    text = data.joinpath(filename).read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_model_listing() -> list[str]:
    """Return the display names of the 2019 listing, duplicates kept, in file order."""
    return _read_listing(_MODELS_FILE)


def read_image_listing() -> list[str]:
    """Return the display names of the 2019 image listing, duplicates kept, in file order."""
    return _read_listing(_IMAGES_FILE)


def det_bytes(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes.

    Args:
        seed: Any string; equal seeds give equal bytes.
        size: Number of bytes.

    Returns:
        ``size`` bytes.
    """
    # random.Random is fast (randbytes is C) and its output for a bytes seed is stable
    # across Python versions; hashing first spreads similar seeds apart.
    return random.Random(hashlib.sha256(seed.encode()).digest()).randbytes(size)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _family(display: str) -> str:
    low = display.lower()
    if low.startswith("tlt "):
        return "tlt"
    if re.match(r"(annotation|segmentation|classification)_", low):
        return "clara"
    if low.startswith("onnx "):
        return "onnx"
    return "other"


def _framework(display: str) -> str | None:
    low = display.lower()
    for word, framework in _FRAMEWORK_WORDS:
        if word in low:
            return framework
    return {"tlt": "TLT", "clara": "Clara Train", "onnx": "TensorRT"}.get(_family(display))


def _precision(display: str, framework: str | None, index: int) -> str | None:
    match = re.search(r"\b(INT8|FP16|FP32)\b", display, re.IGNORECASE)
    if match:
        return match.group(1).upper()
    if framework in ("TensorFlow", "PyTorch", "MXNet"):
        return "AMP" if index % 2 == 0 else "FP32"
    if framework in ("TLT", "Clara Train"):
        return "FP32"
    return "FP16" if framework == "NeMo" else None


def _application(display: str) -> str | None:
    low = display.lower()
    return next((app for rx, app in _APPLICATIONS if re.search(rx, low)), None)


def _machine_names(displays: list[str]) -> list[tuple[str, str | None]]:
    """Distinct machine names (and a framework for split duplicates), in listing order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, display in enumerate(displays):
        groups[_slug(display)].append(i)
    out: list[tuple[str, str | None]] = [("", None)] * len(displays)
    used: set[str] = set()
    for base, members in groups.items():
        for rank, i in enumerate(members):
            framework = _framework(displays[i])
            if len(members) > 1 and framework is None and rank < 2:
                # Like real NGC, where twin "BERT ... SQuAD" entries are the TF and PyTorch
                # checkpoints of the same model.
                framework, suffix = (("TensorFlow", "_tf"), ("PyTorch", "_pyt"))[rank]
            else:
                suffix = "" if rank == 0 else f"_{rank + 1}"
            name = base + suffix
            n = 2
            while name in used:  # a "_2" suffix may collide with a listed name
                name, n = f"{base}{suffix}_{n}", n + 1
            used.add(name)
            out[i] = (name, framework)
    return out


def _description(display: str, application: str | None, framework: str | None) -> str:
    what = (application or "deep learning").lower()
    article = "an" if what[0] in "aeiou" else "a"
    built = f" built with {framework}" if framework else ""
    return (
        f"{display}: {article} {what} model{built}, taken from the 2019 NGC catalog listing. "
        "Synthetic entry served by the mirror fake NGC server; its files are deterministic "
        "pseudo-random bytes, not real weights."
    )


def _sized(seed: str, file_size: int) -> int:
    # +-12% around file_size so that sizes differ between files but stay predictable.
    if file_size <= 0:
        return 0
    h = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return file_size - file_size // 8 + h % (file_size // 4 + 1)


def _versions(
    rid: str,
    created: datetime,
    count: int,
    version_ids: list[str],
    paths: tuple[str, ...],
    file_size: int,
    zero_byte_entry: bool,
) -> list[FakeVersion]:
    versions: list[FakeVersion] = []
    for k, version_id in enumerate(version_ids[:count]):
        v_created = created + timedelta(days=30 * k, hours=k + 1)
        seed = f"{rid}\0{version_id}"
        n_files = 1 + int.from_bytes(hashlib.sha256(seed.encode()).digest()[:2], "big") % 3
        chosen = list(paths[:n_files])
        if zero_byte_entry:
            # The catalog's one empty file plus a guaranteed nested path.
            chosen = [paths[0], "checkpoints/model.ckpt", "empty.txt"]
        files = []
        for path in chosen:
            fseed = f"{seed}\0{path}"
            size = 0 if path == "empty.txt" else _sized(fseed, file_size)
            files.append(FakeFile(path=path, content=det_bytes(fseed, size)))
        versions.append(
            FakeVersion(
                version_id=version_id,
                created=iso_date(v_created),
                updated=iso_date(v_created + timedelta(minutes=7)),
                files=files,
                description=f"Release {version_id} of {rid}.",
            )
        )
    versions.reverse()  # newest first
    return versions


def _model_entries(versions_per_entry: int, file_size: int, limit: int | None) -> list[FakeEntry]:
    displays = read_model_listing()
    names = _machine_names(displays)  # over the whole listing: ids do not depend on limit
    entries: list[FakeEntry] = []
    for i, (display, (name, framework)) in enumerate(zip(displays, names, strict=True)):
        if limit is not None and i >= limit:
            break
        family = _family(display)
        team = {"tlt": "tlt", "clara": "med"}.get(family)
        application = _application(display)
        seq_len = re.search(r"seqLen=(\d+)", display)
        labels = [x for x in (application, framework) if x]
        if seq_len:
            labels.append(f"seqLen {seq_len.group(1)}")
        created = _MODELS_EPOCH + timedelta(days=2 * i, hours=i % 7, minutes=(13 * i) % 60)
        rid = "/".join(p for p in ("nvidia", team, name) if p)
        prefix = "v" if family == "tlt" else ""
        versions = _versions(
            rid,
            created,
            versions_per_entry,
            [f"{prefix}{k}" for k in range(1, versions_per_entry + 1)],
            (
                _WEIGHTS_FILE.get(framework or "", "model.bin"),
                "config.json",
                "checkpoints/model.ckpt",
            ),
            file_size,
            zero_byte_entry=(i == 0),
        )
        entries.append(
            FakeEntry(
                kind="model",
                org="nvidia",
                team=team,
                name=name,
                display_name=display,
                description=_description(display, application, framework),
                framework=framework,
                precision=_precision(display, framework, i),
                application=application,
                labels=labels,
                created=iso_date(created),
                updated=versions[0].updated if versions else iso_date(created),
                versions=versions,
            )
        )
    return entries


def _resource_entries(versions_per_entry: int, file_size: int) -> list[FakeEntry]:
    entries: list[FakeEntry] = []
    for j, (name, display, team, framework, precision, application) in enumerate(_RESOURCES):
        created = _RESOURCES_EPOCH + timedelta(days=5 * j, hours=j)
        rid = "/".join(p for p in ("nvidia", team, name) if p)
        versions = _versions(
            rid,
            created,
            versions_per_entry,
            [f"{k}.0" for k in range(1, versions_per_entry + 1)],
            _RESOURCE_FILES,
            file_size,
            zero_byte_entry=False,
        )
        entries.append(
            FakeEntry(
                kind="resource",
                org="nvidia",
                team=team,
                name=name,
                display_name=display,
                description=(
                    f"{display}: training and inference scripts with a quick start guide. "
                    "Synthetic model-script entry served by the mirror fake NGC server for "
                    "offline tests and demos."
                ),
                framework=framework,
                precision=precision,
                application=application,
                labels=[application, framework, "Model Script"],
                created=iso_date(created),
                updated=versions[0].updated if versions else iso_date(created),
                versions=versions,
            )
        )
    return entries


def image_names(displays: list[str]) -> list[str]:
    """Distinct repository names (``-`` slugs, ``-2`` suffixes for duplicates), in order."""
    used: set[str] = set()
    names: list[str] = []
    for display in displays:
        base = re.sub(r"[^a-z0-9]+", "-", display.lower()).strip("-") or "image"
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        names.append(name)
    return names


def _image_entries() -> list[FakeEntry]:
    displays = read_image_listing()
    entries: list[FakeEntry] = []
    for i, (display, name) in enumerate(zip(displays, image_names(displays), strict=True)):
        h = int.from_bytes(hashlib.sha256(f"image\0{name}".encode()).digest()[:8], "big")
        count = 1 + h % 3
        created = _IMAGES_EPOCH + timedelta(days=3 * i, hours=i % 5)
        suffix = "-py3" if name in _PY3_IMAGES else ""
        arches = ["arm64"] if "l4t" in name else ["amd64", "arm64"] if h % 4 == 0 else ["amd64"]
        tags: list[FakeVersion] = []
        for k in range(count):  # oldest first, one month apart, ending at 19.10
            tag = f"19.{10 - (count - 1 - k):02d}{suffix}"
            t_created = created + timedelta(days=30 * k, hours=k + 1)
            seed = f"{name}:{tag}"
            digest = hashlib.sha256(seed.encode()).hexdigest()
            size = 1_000_000_000 + int(digest[:12], 16) % 8_000_000_000
            tags.append(
                FakeVersion(
                    version_id=tag,
                    created=iso_date(t_created),
                    updated=iso_date(t_created + timedelta(minutes=11)),
                    description=f"Release {tag} of nvidia/{name}.",
                    digest=f"sha256:{digest}",
                    image_size=size,
                    architectures=list(arches),
                )
            )
        tags.reverse()  # newest first
        entries.append(
            FakeEntry(
                kind="image",
                org="nvidia",
                team=None,
                name=name,
                display_name=display,
                description=(
                    f"{display}: GPU-optimized container image from the 2019 NGC catalog "
                    "listing. Synthetic repository served by the mirror fake NGC server; its "
                    "tags, digests and sizes are fake."
                ),
                labels=["HPC" if i < _HPC_IMAGES else "Deep Learning", "Container"],
                created=iso_date(created),
                updated=tags[0].updated,
                versions=tags,
            )
        )
    return entries


def build_seed(
    *,
    versions_per_entry: int = 2,
    file_size: int = 2048,
    limit: int | None = None,
    include_resources: bool = True,
    include_images: bool = False,
) -> FakeCatalog:
    """Build the seed catalog; see :func:`mirror.fakengc.catalog.seed_catalog`.

    Args:
        versions_per_entry: Versions per entry.
        file_size: Approximate file size in bytes.
        limit: Maximum number of model entries.
        include_resources: Also add the resource entries.
        include_images: Also add the image repository entries.

    Returns:
        A new catalog.
    """
    if versions_per_entry < 0 or file_size < 0 or (limit is not None and limit < 0):
        raise ValueError("versions_per_entry, file_size and limit must be >= 0")
    entries = _model_entries(versions_per_entry, file_size, limit)
    if include_resources:
        entries += _resource_entries(versions_per_entry, file_size)
    if include_images:
        entries += _image_entries()
    return FakeCatalog(entries=entries)
