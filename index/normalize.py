"""Family keys and variant attributes: which catalog entries are "the same thing".

The NGC catalog lists one model many times: per precision, sequence length, GPU target,
framework and optimizer, and with spacing, punctuation and word-order variants of its display
name. Search collapses each family into one hit that lists its variants (DESIGN.md, "Search with
collapsed duplicates"). This module decides both halves:

* ``extract_variants`` takes the variant attributes out of a name (plus the machine name and the
  catalog's own framework/precision attributes) and returns what is left;
* ``family_key`` turns what is left into an order-free key, scoped by kind.

Every rule that decides whether a token is a variant looks at the token alone or at the *set* of
tokens, never at its neighbours. That is what makes keys word-order invariant and idempotent: a
key is a sorted token set, and feeding it back in finds exactly the same tokens. The one
neighbour rule, gluing a bare number onto the word before it ("ResNet 18" -> "resnet18"), lives in
``normalize_text`` and cannot fire again on a sorted key because digit-led tokens sort first.

Stdlib only and no work at call time that could be done at import: the search CLI imports this.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# --- canonical names (token as normalize_text spells it -> display form) -------------------------

_PRECISIONS = {
    "fp16": "FP16", "fp32": "FP32", "int8": "INT8", "int4": "INT4", "amp": "AMP",
    "mixed": "AMP", "tf32": "TF32", "bf16": "BF16", "fp8": "FP8",
}  # fmt: skip
_GPUS = {
    "t4": "T4", "v100": "V100", "a100": "A100", "h100": "H100", "h200": "H200", "a10": "A10",
    "a10g": "A10G", "a30": "A30", "a40": "A40", "l4": "L4", "l40": "L40", "l40s": "L40S",
    "p4": "P4", "p40": "P40", "p100": "P100", "k80": "K80",
    # L4T (Linux for Tegra) builds are the Jetson flavour of a product, e.g. DeepStream-l4t.
    "jetson": "Jetson", "l4t": "Jetson", "tegra": "Jetson",
}  # fmt: skip
_FRAMEWORKS = {
    "tensorflow": "TensorFlow", "pytorch": "PyTorch", "mxnet": "MXNet", "paddle": "PaddlePaddle",
    "paddlepaddle": "PaddlePaddle", "onnx": "ONNX", "tensorrt": "TensorRT", "nemo": "NeMo",
    "caffe": "Caffe", "caffe2": "Caffe2", "nvcaffe": "NVCaffe", "jax": "JAX", "keras": "Keras",
    "theano": "Theano", "chainer": "Chainer", "cntk": "CNTK",
}  # fmt: skip
_OPTIMIZERS = {
    "lamb": "LAMB", "adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "lars": "LARS",
    "novograd": "NovoGrad",
}  # fmt: skip
# Abbreviations that only machine names use ("bert_tf_ckpt_..."); in a display name "TF" or
# "TRT" could be anything, so they stay words there.
_MACHINE_ONLY = {
    "tf": ("framework", "TensorFlow"), "tf1": ("framework", "TensorFlow"),
    "tf2": ("framework", "TensorFlow"), "pyt": ("framework", "PyTorch"),
    "trt": ("framework", "TensorRT"),
}  # fmt: skip
_EXACT: dict[str, tuple[str, str]] = {
    **{k: ("precision", v) for k, v in _PRECISIONS.items()},
    **{k: ("gpu", v) for k, v in _GPUS.items()},
    **{k: ("framework", v) for k, v in _FRAMEWORKS.items()},
    **{k: ("optimizer", v) for k, v in _OPTIMIZERS.items()},
}
# Catalog attribute values that carry no variant ("OTHER", "ALL") or several ("FPBOTH").
_ATTRIBUTE_NOISE = frozenset({"", "other", "others", "all", "none", "unknown", "n a"})
_FPBOTH = ("FP16", "FP32")
# Words that say nothing about identity: "TLT Classification with Resnet18." is
# "TLT ResNet18 Classification". "and", "to" stay: "liver and tumor" is not "liver tumor".
_FILLER = frozenset({
    "a", "an", "the", "for", "with", "of", "using", "use", "on", "in", "by", "via", "optimizer",
    "precision", "model", "models", "container", "containers", "nvidia",
})  # fmt: skip
# Form factors and brand words that only qualify a GPU ("Tesla V100-SXM2-32GB").
_GPU_QUALIFIERS = frozenset({"tesla", "sxm", "sxm2", "sxm4", "sxm5", "pcie", "nvl"})
# A machine name's bare number is a sequence length only if it is a usual one and the name is
# about a transformer/QA model: "bert_..._squad11_amp_384" yes, "gnmt_for_pytorch_2" no.
_SEQLENS = frozenset({"64", "128", "256", "384", "512", "1024", "2048", "4096", "8192"})
_NLP_HINTS = ("bert", "squad", "qa", "gpt", "megatron", "transformer", "roberta", "electra",
              "xlnet", "t5", "llama", "seqlen", "nlp")  # fmt: skip
_IMAGE_KINDS = frozenset({"image", "container"})
_FIELDS = ("precision", "seqlen", "gpu", "framework", "optimizer", "version")
_DIGITS = frozenset("0123456789")

# --- patterns, compiled once --------------------------------------------------------------------

# Everything that is not a letter/digit becomes a space, except a dot between two digits:
# "SQuAD 1.1" and "TensorRT 5.0.2" keep their numbers whole, "Resnet18." loses its dot.
_PUNCT = re.compile(r"(?<![0-9])\.|\.(?![0-9])|[^\w.]|_")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)*")
# "MobileNetv2" / "InceptionV1" / "DetectNet_v2" all become "<name> v<n>"; "v1"/"v2" stay tokens
# of the identity (MobileNet v1 is not MobileNet v2).
_V_SUFFIX = re.compile(r"(.{3,})(v[0-9]+(?:\.[0-9]+)*)")
_FRAMEWORK_VERSION = re.compile(
    "(?P<fw>"
    + "|".join(sorted(_FRAMEWORKS, key=len, reverse=True))
    + r")v?(?P<ver>[0-9]+(?:\.[0-9]+)*)"
)
_VERSION_WORD = re.compile(r"(?:version|release)v?([0-9]+(?:\.[0-9]+)*)")
# x.y.z is a release number wherever it stands; x.y alone is not (SQuAD 1.1, ResNet v1.5,
# MobileNetv2_1.0 are identities), so only x.y after a framework name counts as a version.
_SEMVER = re.compile(r"(?P<word>.*?)v?(?P<ver>[0-9]+(?:\.[0-9]+){2,})")
_SEQLEN = re.compile(r"seq(?:uence)?len(?:gth)?([0-9]+)")
_LEN = re.compile(r"len(?:gth)?([0-9]+)")  # "seq_len=128" -> "seq", "len128"
_MEMORY = re.compile(r"([0-9]+)gb?")


@dataclass(frozen=True)
class Variants:
    """Variant attributes of one catalog entry, canonical spellings, in order of appearance."""

    precision: tuple[str, ...] = ()
    seqlen: tuple[str, ...] = ()
    gpu: tuple[str, ...] = ()
    framework: tuple[str, ...] = ()
    optimizer: tuple[str, ...] = ()
    version: tuple[str, ...] = ()

    def merged(self, other: Variants) -> Variants:
        """Return the field-wise union, keeping first-seen order and dropping repeats."""
        return Variants(
            *(tuple(dict.fromkeys(getattr(self, f) + getattr(other, f))) for f in _FIELDS)
        )

    def as_dict(self) -> dict[str, list[str]]:
        """Return the non-empty fields as lists (JSON- and index-friendly)."""
        return {f: list(values) for f in _FIELDS if (values := getattr(self, f))}


def normalize_text(text: str) -> str:
    """Normalize a name for comparison.

    NFKC and casefold; punctuation to spaces (a dot between digits stays); a bare number glued
    to the word before it so "ResNet 18", "ResNet-18" and "resnet18" agree; a trailing version
    marker split off so "MobileNetv2" and "MobileNet v2" agree; single spaces. No camel-case
    split: "GoogLeNet" and "Googlenet" must stay equal. Idempotent.

    Args:
        text: Any text.

    Returns:
        Space-separated normalized tokens (possibly empty).
    """
    return " ".join(_tokens(text))


def extract_variants(
    display_name: str,
    name: str | None = None,
    *,
    framework: str | None = None,
    precision: str | None = None,
    kind: str | None = None,
) -> tuple[str, Variants]:
    """Split a catalog entry's name into its identity and its variant attributes.

    Args:
        display_name: The entry's display name, e.g. "ONNX ResNet50 TensorRT 5.0.2 T4 FP16".
        name: The machine name, e.g. "bert_tf_ckpt_large_qa_squad11_amp_384"; it adds
            variants (its own abbreviations "tf", "pyt", "trt" and a bare sequence length count)
            but never changes the returned name.
        framework: The catalog's framework attribute ("TensorFlow", "TAO Toolkit", ...).
        precision: The catalog's precision attribute ("FP16", "AMP", "FPBOTH", ...).
        kind: Entry kind; for images framework names are the product, not a variant.

    Returns:
        The normalized display name with the variant tokens removed (the whole normalized name
        if nothing else would remain), and the variants found in all four sources.
    """
    keep = _is_image(kind)
    tokens, residual, found = _reduce(_tokens(display_name), keep_frameworks=keep)
    variants = found
    if name:
        machine = _tokens(name, glue=False)
        variants = variants.merged(_scan(machine, machine=True, keep_frameworks=keep)[1])
    if framework:
        variants = variants.merged(Variants(framework=_attribute(framework, "framework")))
    if precision:
        variants = variants.merged(Variants(precision=_attribute(precision, "precision")))
    return " ".join(residual or tokens), variants


def family_key(kind: str, display_name: str, name: str | None = None) -> str:
    """Return the collapse key of a catalog entry: ``"<kind>:<sorted tokens>"``.

    The key is the display name without variant attributes and filler words, as a sorted,
    deduplicated token list, so word order, case, spacing and punctuation do not matter. A key
    is never emptied by stripping: if only variants (or fillers) are left, they stay ("PyTorch"
    is a product, not a variant of nothing). Feeding a key's text back in returns the same key.

    Args:
        kind: Entry kind ("model", "resource", "image", ...); entries of different kinds never
            share a key, and for images framework names are identity.
        display_name: The display name.
        name: The machine name, used only when the display name has no letters or digits.

    Returns:
        The family key.
    """
    tokens = _tokens(display_name)
    if not tokens and name:
        tokens = _tokens(name)
    tokens, residual, _ = _reduce(tokens, keep_frameworks=_is_image(kind))
    key = (
        [t for t in residual if t not in _FILLER]
        or [t for t in tokens if t not in _FILLER]
        or tokens
    )
    return f"{kind}:{' '.join(sorted(set(key)))}"


# --- internals ----------------------------------------------------------------------------------


def _is_image(kind: str | None) -> bool:
    return kind is not None and kind.strip().casefold() in _IMAGE_KINDS


def _tokens(text: str, *, glue: bool = True) -> list[str]:
    # casefold can produce text that NFKC changes again, hence NFKC on both sides.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    glued: list[str] = []
    for tok in _PUNCT.sub(" ", folded).split():
        # Only after a token that starts and ends with a non-digit: "resnet 18" glues, while
        # "mobilenetv2 1.0" and "10x5 2" do not. Digit-led tokens sort before all others, so a
        # sorted key never offers a new glue.
        prev = glued[-1] if glued else ""
        if (
            glue
            and prev
            and prev[0] not in _DIGITS
            and prev[-1] not in _DIGITS
            and _NUMBER.fullmatch(tok)
        ):
            glued[-1] = prev + tok
        else:
            glued.append(tok)
    out: list[str] = []
    for tok in glued:
        tail: list[str] = []
        while (m := _V_SUFFIX.fullmatch(tok)) and not _NUMBER.fullmatch(m[1]):
            tok, tail = m[1], [m[2], *tail]
        out += [tok, *tail]
    return out


def _classify(tok: str, keep_frameworks: bool, machine: bool) -> tuple[list[tuple[str, str]], str]:
    """Variants held by one token, and what remains of it ("" when it is all variant).

    Machine names spell versions with underscores ("tensorrt_5_0_2"), so no version is read
    from them.
    """
    hit = _EXACT.get(tok) or (_MACHINE_ONLY.get(tok) if machine else None)
    if hit:
        keep = hit[0] == "framework" and keep_frameworks
        return ([], tok) if keep else ([hit], "")
    if m := _FRAMEWORK_VERSION.fullmatch(tok):
        found = [] if machine else [("version", m["ver"])]
        if keep_frameworks:
            return found, m["fw"]
        return [("framework", _FRAMEWORKS[m["fw"]]), *found], ""
    if m := _SEQLEN.fullmatch(tok):
        return [("seqlen", m[1])], ""
    if m := _VERSION_WORD.fullmatch(tok):
        return ([] if machine else [("version", m[1])]), ""
    if m := _SEMVER.fullmatch(tok):
        found = [] if machine else [("version", m["ver"])]
        if not m["word"]:
            return found, ""
        more, rest = _classify(m["word"], keep_frameworks, machine)
        return found + more, rest
    return [], tok


def _scan(tokens: list[str], *, machine: bool, keep_frameworks: bool) -> tuple[list[str], Variants]:
    """Take the variant tokens out of ``tokens``; return the rest (in order) and the variants."""
    found: dict[str, list[str]] = {f: [] for f in _FIELDS}
    words: list[str] = []
    gpu_at: list[int] = []  # token index of each found["gpu"] entry
    for i, tok in enumerate(tokens):
        hits, rest = _classify(tok, keep_frameworks, machine)
        for field, value in hits:
            found[field].append(value)
            if field == "gpu":
                gpu_at.append(i)
        words.append(rest)
    # Context rules depend only on which tokens are present, never on their order.
    has_seq = any(w in ("seq", "sequence") for w in words)
    has_len = any(_LEN.fullmatch(w) for w in words)
    nlp = machine and any(t.startswith(_NLP_HINTS) for t in tokens)
    gpus, memory = found["gpu"], [""] * len(found["gpu"])
    residual: list[str] = []
    for i, word in enumerate(words):
        if not word:
            continue
        if gpus and word in _GPU_QUALIFIERS:
            continue
        if gpus and (m := _MEMORY.fullmatch(word)):
            # "V100-16G": attach to the nearest GPU named before it, else to the first one.
            j = max((k for k, at in enumerate(gpu_at) if at < i), default=0)
            if memory[j]:
                gpus.append(gpus[j])
                memory.append("")
                j = len(gpus) - 1
            memory[j] = f"-{m[1]}G"
            continue
        if has_len and word in ("seq", "sequence"):
            continue
        if has_seq and (m := _LEN.fullmatch(word)):
            found["seqlen"].append(m[1])
            continue
        if nlp and word in _SEQLENS:
            found["seqlen"].append(word)
            continue
        residual.append(word)
    found["gpu"] = [g + mem for g, mem in zip(gpus, memory, strict=True)]
    return residual, Variants(*(tuple(dict.fromkeys(found[f])) for f in _FIELDS))


def _reduce(tokens: list[str], *, keep_frameworks: bool) -> tuple[list[str], list[str], Variants]:
    """Scan until the residual is itself normalized text.

    Removing a variant can bring a number next to a word ("T FP16 4" -> "t 4" -> "t4"), so the
    residual is normalized and scanned again; each round removes a token, so this ends.

    Returns:
        The tokens of the last round, what remained of them, and all variants found.
    """
    variants = Variants()
    while True:
        residual, found = _scan(tokens, machine=False, keep_frameworks=keep_frameworks)
        variants = variants.merged(found)
        again = _tokens(" ".join(residual))
        if again == residual:
            return tokens, residual, variants
        tokens = again


def _attribute(value: str, field: str) -> tuple[str, ...]:
    """Canonical values of a catalog attribute; unknown values are kept as NGC spells them."""
    tokens = _tokens(value)
    if field == "precision" and "fpboth" in tokens:
        return _FPBOTH
    found = getattr(_scan(tokens, machine=True, keep_frameworks=False)[1], field)
    if found or " ".join(tokens) in _ATTRIBUTE_NOISE:
        return tuple(found)
    return (value.strip().upper() if field == "precision" else value.strip(),)
