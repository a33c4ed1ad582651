"""Family keys and variant attributes (index/normalize.py) against a hand-labelled seed listing.

tests/data/family_labels.json is ground truth labelled by meaning: every line of the 2019 NGC
listing (models and images, duplicates kept) in exactly one group, with the reason. The keys are
scored pairwise against it; the explicit pairs from DESIGN.md "Search with collapsed duplicates"
are tested one by one; hypothesis checks the invariants keys must have for any text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from importlib import resources
from itertools import combinations
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from index.normalize import Variants, extract_variants, family_key, normalize_text

LABELS = json.loads((Path(__file__).parent / "data" / "family_labels.json").read_text("utf-8"))
# (kind, display name, group number) for every labelled line.
LINES = [(g["kind"], m, n) for n, g in enumerate(LABELS) for m in g["members"]]


def _listing(filename: str) -> list[str]:
    data = resources.files("mirror.fakengc").joinpath("data", filename).read_text("utf-8")
    return [line.strip() for line in data.splitlines() if line.strip()]


# --- the labels themselves ----------------------------------------------------------------------


def test_labels_cover_every_listed_line_exactly_once() -> None:
    # The fake NGC server ships the same listing as ../shared/catalog (tests must not read it).
    for kind, filename in (("model", "ngc-2019-models.txt"), ("image", "ngc-2019-images.txt")):
        labelled = Counter(m for k, m, _ in LINES if k == kind)
        assert labelled == Counter(_listing(filename)), kind
    assert all(g["kind"] in ("model", "image") and g["why"].strip() for g in LABELS)


# --- pairwise precision and recall against the labels -------------------------------------------


def test_family_keys_match_hand_labels_pairwise() -> None:
    keys = [family_key(kind, name) for kind, name, _ in LINES]
    tp = fp = fn = 0
    wrong: list[str] = []
    cross_kind: list[str] = []
    for (a, ka), (b, kb) in combinations(zip(LINES, keys, strict=True), 2):
        same_label = a[0] == b[0] and a[2] == b[2]
        same_key = ka == kb
        if same_key and a[0] != b[0]:
            cross_kind.append(f"{a[:2]} / {b[:2]} -> {ka!r}")
        if same_label and same_key:
            tp += 1
        elif same_key:
            fp += 1
            wrong.append(f"merged apart pair: {a[:2]} / {b[:2]} -> {ka!r}")
        elif same_label:
            fn += 1
            wrong.append(f"split family pair: {a[:2]} / {b[:2]} -> {ka!r} vs {kb!r}")
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(f"\nfamily_key vs labels: {tp} true, {fp} false, {fn} missed pairs of {len(LINES)} "
          f"lines; precision {precision:.4f}, recall {recall:.4f}")  # fmt: skip
    assert cross_kind == [], "a model and an image share a key"
    assert precision >= 0.95 and recall >= 0.95, "\n".join(wrong)


def test_the_same_name_as_model_and_as_image_gives_two_keys() -> None:
    shared = [m for _, m, _ in LINES if family_key("model", m) == family_key("image", m)]
    assert shared == []


# --- the explicit pairs -------------------------------------------------------------------------

COLLAPSE = [
    ("model", "GNMT for PyTorch", "GNMT for TensorFlow"),
    ("model", "GNMT for PyTorch", "GNMT for PyTorch"),
    ("model", "BERT-Large (pre-training) for TensorFlow",
     "BERT-Large(pre-training) for TensorFlow"),
    ("model", "BERT-Large(pre-training) for TensorFlow",
     "BERT-Large(pre-training using LAMB optimizer) for TensorFlow"),
    ("model", "BERT-Large(pre-training using LAMB optimizer) for TensorFlow",
     "BERT-Large(pre-training using LAMB optimizer) for Pytorch"),
    ("model", "ONNX ResNet50 TensorRT 5.0.2 T4 FP16", "ONNX ResNet50 TensorRT 5.0.2 V100-16G INT8"),
    ("model", "ONNX ResNet50 TensorRT 5.0.2 T4 FP32", "ONNX ResNet50 TensorRT 5.0.2 T4 INT8"),
    ("model", "ONNX InceptionV1 TensorRT 5.0.2 T4 FP16",
     "ONNX InceptionV1 TensorRT 5.0.2 V100-16G FP32"),
    ("model", "ONNX MobileNetv2_1.0 TensorRT 5.0.2 T4 INT8",
     "ONNX MobileNetv2_1.0 TensorRT 5.0.2 V100-16G FP16"),
    ("model", "ONNX VGG16 TensorRT 5.0.2 T4 FP16", "ONNX VGG16 TensorRT 5.0.2 V100-16G FP32"),
    ("model", "TLT Classification with Resnet18.", "TLT ResNet18 Classification"),
    ("model", "TLT Classification with VGG16.", "TLT VGG16 Classification"),
    ("model", "TLT Classification with VGG19.", "TLT VGG19 Classification"),
    ("model", "TLT Classification with AlexNet", "TLT AlexNet Classification"),
    ("model", "TLT Classification with Googlenet.", "TLT GoogLeNet Classification"),
    ("model", "TLT Classification with Resnet50.", "TLT ResNet50 Classification"),
    ("model", "BERT-Base(fine-tuning) - SQuAD 1.1, seqLen=128",
     "BERT-Base(fine-tuning) - SQuAD 1.1, seqLen=384"),
    ("model", "BERT-Large(fine-tuning) - SQuAD  2.0, seqLen=128",
     "BERT-Large(fine-tuning) - SQuAD 2.0, seqLen=384"),
    ("model", "MaskRCNN for PyTorch", "MaskRCNN for PyTorch"),
    ("model", "ResNet v1.5 for MXNet", "ResNet v1.5 for TensorFlow"),
    ("model", "segmentation_ct_lung_tumor", "segmentation_ct_lung_tumor"),
    ("model", "Waveglow for PyTorch", "Waveglow for PyTorch"),
    ("model", "ResNet 18", "resnet18"),
    ("model", "ResNet-18 Classification", "Classification ResNet18"),
    ("model", "MobileNet v2", "MobileNetV2"),
    ("model", "BERT Large, seq_len=512, Mixed Precision", "BERT Large sequence length 128 AMP"),
    ("model", "ResNet50 Tesla V100-SXM2-32GB FP16", "ResNet50 A100 80GB TF32"),
    ("model", "Merlin PyTorch", "Merlin TensorFlow"),
    ("image", "DeepStream", "DeepStream"),
    ("image", "DeepStream", "DeepStream-l4t"),
]  # fmt: skip

APART = [
    ("model", "TLT ResNet18 Classification", "TLT ResNet50 Classification"),
    ("model", "TLT ResNet18 Classification", "TLT ResNet10 Classification"),
    ("model", "TLT VGG16 Classification", "TLT VGG19 Classification"),
    ("model", "TLT MobileNet v1 Classification", "TLT MobileNet v2 Classification"),
    ("model", "TLT MobileNet v1 DetectNet_v2", "TLT MobileNet v2 DetectNet_v2"),
    ("model", "TLT ResNet18 Classification", "TLT ResNet18 DetectNet_v2"),
    ("model", "TLT ResNet18 DetectNet_v2", "TLT ResNet18 FasterRCNN"),
    ("model", "TLT ResNet18 FasterRCNN", "TLT ResNet18 SSD"),
    ("model", "TLT Object Detection with Resnet18.", "TLT ResNet18 Classification"),
    ("model", "BERT-Base(fine-tuning) - SQuAD 1.1, seqLen=128",
     "BERT-Large(fine-tuning) - SQuAD 1.1, seqLen=128"),
    ("model", "BERT-Large(pre-training) for TensorFlow",
     "BERT-Large(fine-tuning) - SQuAD 1.1, seqLen=128"),
    ("model", "BERT-Base(fine-tuning) - SQuAD 1.1, seqLen=128",
     "BERT-Base(fine-tuning) - SQuAD 2.0, seqLen=128"),
    ("model", "ResNet v1.5 for MXNet", "ResNet v1 for MXNet"),
    ("model", "ONNX ResNet50 TensorRT 5.0.2 T4 FP16", "ONNX VGG16 TensorRT 5.0.2 T4 FP16"),
    ("model", "ONNX MobileNetv2_1.0 TensorRT 5.0.2 T4 FP16",
     "ONNX MobileNetv2 TensorRT 5.0.2 T4 FP16"),
    ("model", "annotation_ct_liver", "annotation_ct_liver_tumor"),
    ("model", "annotation_ct_liver_tumor", "segmentation_ct_liver_and_tumor"),
    ("model", "annotation_ct_liver", "segmentation_ct_liver_and_tumor"),
    ("model", "Waveglow for PyTorch", "WaveGlow LJS 256 Channels"),
    ("image", "TensorRT", "TensorRT Inference Server"),
    ("image", "Inference Server", "TensorRT Inference Server"),
    ("image", "ParaView", "ParaView IndeX"),
    ("image", "ParaView IndeX", "ParaView OptiX"),
    ("image", "ParaView OptiX", "ParaView Holodeck"),
    ("image", "IndeX", "ParaView IndeX"),
    ("image", "CUDA", "CUDA GL"),
    ("image", "CUDA", "CUDA Sample"),
    ("image", "CUDA GL", "CUDA Sample"),
    ("image", "OmniSci EE", "OmniSci Open Source"),
    ("image", "PyTorch", "TensorFlow"),
    ("image", "PyTorch", "MXNet"),
    ("image", "PyTorch", "Torch"),
    ("image", "NVCaffe", "Caffe2"),
    ("image", "DeepStream", "l4t-base"),
    ("image", "Merlin PyTorch", "Merlin TensorFlow"),  # two containers, not one in two flavours
]  # fmt: skip


@pytest.mark.parametrize(("kind", "a", "b"), COLLAPSE)
def test_variants_of_one_family_share_a_key(kind: str, a: str, b: str) -> None:
    assert family_key(kind, a) == family_key(kind, b)


@pytest.mark.parametrize(("kind", "a", "b"), APART)
def test_different_things_keep_different_keys(kind: str, a: str, b: str) -> None:
    assert family_key(kind, a) != family_key(kind, b)


@pytest.mark.parametrize("name", ["GNMT for PyTorch", "PyTorch", "TLT ResNet18 Classification"])
def test_a_model_never_collapses_with_an_image(name: str) -> None:
    assert family_key("model", name) != family_key("image", name)


@pytest.mark.parametrize("product", ["PyTorch", "TensorFlow", "MXNet", "PaddlePaddle", "TensorRT"])
def test_a_framework_that_is_the_product_keeps_its_name(product: str) -> None:
    assert family_key("image", product) == f"image:{product.lower()}"
    # As a model name it is all variant, and still never emptied.
    assert family_key("model", product) == f"model:{product.lower()}"
    assert family_key("model", f"{product} for") == f"model:{product.lower()}"


# --- variant extraction -------------------------------------------------------------------------


def test_onnx_name_gives_gpu_precision_and_tensorrt_version() -> None:
    rest, v = extract_variants("ONNX ResNet50 TensorRT 5.0.2 V100-16G INT8")
    assert rest == "resnet50"
    assert v.gpu == ("V100-16G",)
    assert v.precision == ("INT8",)
    assert v.version == ("5.0.2",)
    assert v.framework == ("ONNX", "TensorRT")


def test_seqlen_is_a_variant_and_a_dataset_number_is_not_a_version() -> None:
    rest, v = extract_variants("BERT-Base(fine-tuning) - SQuAD 1.1, seqLen=128")
    assert v == Variants(seqlen=("128",))
    assert rest == "bert base fine tuning squad1.1"


def test_machine_name_abbreviations_are_read() -> None:
    _, v = extract_variants("BERT", "bert_tf_ckpt_large_qa_squad11_amp_384")
    assert v == Variants(precision=("AMP",), seqlen=("384",), framework=("TensorFlow",))
    # A dedupe suffix is not a sequence length; "tf" in a display name is just a word.
    assert extract_variants("GNMT", "gnmt_for_pytorch_2")[1] == Variants(framework=("PyTorch",))
    assert extract_variants("TF Hub")[0] == "tf hub"


def test_catalog_attributes_merge_in() -> None:
    _, v = extract_variants(
        "BERT-Large(fine-tuning) - SQuAD 2.0, seqLen=384",
        "bert_tf_ckpt_large_qa_squad2_amp_384",
        framework="PyTorch",
        precision="FP16",
    )
    assert v.as_dict() == {
        "precision": ["AMP", "FP16"],
        "seqlen": ["384"],
        "framework": ["TensorFlow", "PyTorch"],
    }
    assert extract_variants("x", precision="FPBOTH")[1].precision == ("FP16", "FP32")
    assert extract_variants("x", precision="MIXED")[1].precision == ("AMP",)
    assert extract_variants("x", precision="OTHER", framework="Other")[1] == Variants()
    assert extract_variants("x", framework="TAO Toolkit")[1].framework == ("TAO Toolkit",)


def test_optimizer_and_filler_words() -> None:
    rest, v = extract_variants("BERT-Large(pre-training using LAMB optimizer) for Pytorch")
    assert v == Variants(optimizer=("LAMB",), framework=("PyTorch",))
    assert rest == "bert large pre training using optimizer for"  # fillers go in family_key
    assert family_key("model", rest) == "model:bert large pre training"


def test_identity_versions_stay_in_the_name() -> None:
    assert extract_variants("ResNet v1.5 for MXNet")[0] == "resnet v1.5 for"
    assert extract_variants("TLT GoogLeNet DetectNet_v2")[0] == "tlt googlenet detectnet v2"
    assert extract_variants("ONNX MobileNetv2_1.0 TensorRT 5.0.2 T4 FP16")[0] == "mobilenet v2 1.0"
    assert extract_variants("Clara Train SDK 1.2.0")[1].version == ("1.2.0",)


def test_images_keep_framework_words_but_lose_gpu_targets() -> None:
    rest, v = extract_variants("DeepStream-l4t", kind="image")
    assert (rest, v) == ("deepstream", Variants(gpu=("Jetson",)))
    assert extract_variants("PyTorch", kind="image") == ("pytorch", Variants())


def test_variants_merge_is_ordered_and_deduplicated() -> None:
    a = Variants(precision=("FP16", "INT8"), gpu=("T4",))
    b = Variants(precision=("INT8", "FP32"), seqlen=("128",))
    assert a.merged(b) == Variants(precision=("FP16", "INT8", "FP32"), gpu=("T4",), seqlen=("128",))
    assert a.merged(b).as_dict() == {
        "precision": ["FP16", "INT8", "FP32"],
        "seqlen": ["128"],
        "gpu": ["T4"],
    }
    assert Variants().as_dict() == {}


def test_normalize_text_examples() -> None:
    assert normalize_text("BERT-Large(pre-training)  for\tTensorFlow") == (
        "bert large pre training for tensorflow"
    )
    assert normalize_text("ResNet 18") == normalize_text("resnet18") == "resnet18"
    assert normalize_text("Ｒｅｓｎｅｔ１８.") == "resnet18"  # NFKC: full-width forms
    assert normalize_text("MobileNetv2_1.0") == "mobilenet v2 1.0"
    assert normalize_text("GoogLeNet") == normalize_text("Googlenet") == "googlenet"


def test_import_loads_only_the_standard_library() -> None:
    code = (
        "import sys; before = set(sys.modules); import index.normalize; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    foreign = [m for m in out if m.split(".")[0] not in sys.stdlib_module_names | {"index"}]
    assert foreign == []


# --- properties ---------------------------------------------------------------------------------

KINDS = st.sampled_from(["model", "image", "resource"])
# Catalog-like names: variant words, numbers and identity words with punctuation between them,
# the inputs where gluing, splitting and stripping interact.
VOCAB = [
    "fp16", "INT8", "amp", "Mixed", "precision", "T4", "V100", "16G", "a", "100", "sxm2", "l4t",
    "seqLen", "seq", "len", "128", "384", "1.1", "5.0.2", "v2", "v1.5", "1.0", "2", "resnet",
    "MobileNetv2", "BERT", "SQuAD", "for", "the", "with", "LAMB", "optimizer", "PyTorch",
    "TensorRT", "tensorflow", "ONNX", "release", "version", "x", "v", "t", "4", "gb", "DetectNet",
]  # fmt: skip
SEPS = st.sampled_from([" ", "-", "_", "(", ")", ".", ", ", "=", "  ", ""])
CATALOG_LIKE = st.lists(st.tuples(st.sampled_from(VOCAB), SEPS), max_size=8).map(
    lambda parts: "".join(w + s for w, s in parts)
)
ANY_TEXT = st.one_of(st.text(), CATALOG_LIKE)
WORD = st.text(st.characters(min_codepoint=ord("a"), max_codepoint=ord("z")), min_size=1)


@given(ANY_TEXT)
def test_normalize_text_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


@given(KINDS, ANY_TEXT)
def test_family_key_is_idempotent_and_well_formed(kind: str, text: str) -> None:
    key = family_key(kind, text)
    assert key.startswith(f"{kind}:")
    assert family_key(kind, key.split(":", 1)[1]) == key


@given(ANY_TEXT)
def test_extract_variants_returns_normalized_text(text: str) -> None:
    rest, _ = extract_variants(text, text)
    assert normalize_text(rest) == rest


@given(KINDS, st.text(st.characters(categories=("L", "N")), min_size=1))
def test_alphanumeric_names_never_get_an_empty_key(kind: str, text: str) -> None:
    assert family_key(kind, text).split(":", 1)[1]


@given(KINDS, st.lists(WORD, min_size=1, max_size=6).flatmap(
    lambda ws: st.tuples(st.just(ws), st.permutations(ws))
))  # fmt: skip
def test_word_order_does_not_matter(kind: str, words: tuple[list[str], list[str]]) -> None:
    original, shuffled = words
    assert family_key(kind, " ".join(original)) == family_key(kind, " ".join(shuffled))


NOISE = st.sampled_from(["-", "(", ")", "  ", ".", " . ", ") ("])


@given(KINDS, st.lists(st.tuples(WORD, NOISE), min_size=1), st.booleans())
def test_case_spacing_and_punctuation_do_not_matter(
    kind: str, parts: list[tuple[str, str]], upper: bool
) -> None:
    plain = " ".join(w for w, _ in parts)
    noisy = "".join(w + sep for w, sep in parts)
    assert family_key(kind, noisy.upper() if upper else noisy.title()) == family_key(kind, plain)
