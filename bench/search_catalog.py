"""Deterministic synthetic NGC catalogs for the search benchmark (bench/search.py).

`generate(n, seed)` returns `n` IndexDocs made of families x variants, shaped like the real
catalog: "BERT-Large (fine-tuning) - SQuAD 1.1, seqLen=128" per precision, seqLen, GPU and
framework; "TLT ResNet18 Classification"; "ONNX ResNet50 TensorRT 5.0.2 T4 FP16"; Clara
"segmentation_ct_liver_and_tumor"; "<Model> for <Framework>" resources; container images.
Families have ~5-15 variants on average; no two families share an identity (the name without
its variant attributes), and every doc's `family` holds the generator's family number (the
truth for checking index.normalize's keys; index.writer.enrich overwrites it).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator

from index.schema import IndexDoc

FRAMEWORKS = ("TensorFlow", "PyTorch", "MXNet", "PaddlePaddle", "JAX")
FW_SHORT = {"TensorFlow": "tf", "PyTorch": "pyt", "MXNet": "mx", "PaddlePaddle": "pd", "JAX": "jax"}
PRECISIONS = ("FP16", "FP32", "INT8", "AMP", "TF32", "BF16")
GPUS = ("T4", "V100-16G", "V100-32G", "A100", "A10", "H100", "L4")
NLP_ARCH = ("BERT", "RoBERTa", "ELECTRA", "GPT", "Megatron", "DistilBERT", "ALBERT", "T5",
            "XLNet", "BioBERT", "Transformer-XL", "BART")
NLP_SIZE = ("Base", "Large", "Small", "XL", "Tiny", "Medium")
NLP_TASKS = (("fine-tuning", "qa", ("SQuAD 1.1", "SQuAD 2.0", "TriviaQA", "NaturalQuestions")),
             ("fine-tuning", "ner", ("CoNLL-2003", "OntoNotes", "BC5CDR")),
             ("fine-tuning", "cls", ("GLUE MRPC", "GLUE SST-2", "IMDB", "Yelp")),
             ("pre-training", "pretrain", ("Wikipedia", "BookCorpus", "C4", "PubMed")))
CV_BACKBONES = ("ResNet10", "ResNet18", "ResNet34", "ResNet50", "ResNet101", "VGG16", "VGG19",
                "GoogLeNet", "AlexNet", "SqueezeNet", "MobileNet v1", "MobileNet v2",
                "EfficientNet-B0", "EfficientNet-B4", "DarkNet53", "CSPDarkNet", "InceptionV1",
                "InceptionV3", "DenseNet121", "RegNet", "ConvNeXt", "ViT-B16", "Swin-T")
CV_TASKS = ("Classification", "DetectNet_v2", "FasterRCNN", "SSD", "YOLOv3", "RetinaNet",
            "MaskRCNN", "UNet Segmentation", "PeopleNet", "TrafficCamNet", "LPRNet")
CLARA = (("segmentation", "annotation", "classification"), ("ct", "mri", "xray", "pet"),
         ("liver", "spleen", "pancreas", "lung_tumor", "colon_tumor", "hippocampus",
          "brain_tumors", "prostate", "left_atrium", "hepatic_vessel", "kidney", "chest"))
SPEECH = ("Jasper", "QuartzNet", "Citrinet", "Conformer", "Tacotron2", "WaveGlow", "FastPitch",
          "HiFiGAN", "GNMT", "Transformer-BIG", "SpeakerNet", "MatchboxNet")
IMAGES = ("PyTorch", "TensorFlow", "MXNet", "Triton Inference Server", "TensorRT", "RAPIDS",
          "DeepStream", "GROMACS", "NAMD", "LAMMPS", "RELION", "Parabricks", "CUDA", "Kaldi",
          "Clara Train SDK", "TAO Toolkit", "NeMo", "Merlin", "Riva", "DALI", "HPC SDK", "MILC",
          "QMCPACK", "CHROMA", "PIConGPU", "VMD", "BigDFT", "GAMESS", "PaddlePaddle", "JAX")
TEAMS = (None, None, "tlt", "clara", "med", "nemo", "riva", "hpc", "dle", "isv", "tao", "ea")
ORGS = ("nvidia", "nvidia", "nvidia", "nvidia", "ea-bignlp", "isv-ngc-partner", "nvaie")
_VOCAB_TEXT = """model trained dataset accuracy inference training checkpoint weights network layer
layers deep learning neural pretrained fine tuned tuning optimized throughput latency batch size
mixed precision tensor cores gpu gpus performance scripts container deployment production
pipeline images image text speech audio language classification detection segmentation object
recognition translation question answering embedding encoder decoder attention transformer
convolutional residual features feature extraction transfer export onnx engine plugin streaming
real time accelerated benchmark results validation test split epochs learning rate optimizer
schedule warmup loss convergence reproducible example notebook quick start guide documentation
license terms usage commercial research data augmentation preprocessing postprocessing tokenizer
vocabulary sequence length input output format shape channels resolution pixels frames samples
hours multi node distributed horovod nccl scaling cluster nodes memory footprint quantization
calibration sparsity pruning pruned compressed lightweight edge jetson embedded automotive
healthcare medical radiology scans volumes organs tumor annotation clinical labels labeled
supervised unsupervised self contrastive generative adversarial synthesis speaker voice acoustic
mel spectrogram vocoder character word subword bpe corpus wikipedia books news retrieval ranking
recommendation users items click logs tabular graph nodes edges molecular simulation physics
chemistry weather climate video tracking pose keypoints faces people vehicles traffic license
plates retail smart city robotics navigation lidar depth stereo point cloud"""
VOCAB = _VOCAB_TEXT.split()
RARE_WORD = "quokka"  # in exactly RARE_COUNT descriptions: the "rare word" query
RARE_COUNT = 3
# identity, application, [(display name, machine name, variant attributes)]
Family = tuple[str, str, list[tuple[str, str, dict[str, str]]]]


def _variants(rng: random.Random, dims: list[tuple[str, tuple[str, ...], int, int]]
              ) -> list[dict[str, str]]:
    """Pick per dimension lo..hi values, return the cross product (shuffled, capped at 24)."""
    picked = [(key, rng.sample(vals, rng.randint(lo, min(hi, len(vals)))))
              for key, vals, lo, hi in dims]
    combos = [dict(zip([k for k, _ in picked], c, strict=True))
              for c in itertools.product(*[v for _, v in picked])]
    rng.shuffle(combos)
    return combos[:24]


def _nlp(rng: random.Random) -> Family:
    arch, size = rng.choice(NLP_ARCH), rng.choice(NLP_SIZE)
    phase, short, datasets = rng.choice(NLP_TASKS)
    ds = rng.choice(datasets)
    dss = "".join(ch for ch in ds.lower() if ch.isalnum())
    out = []
    if phase == "pre-training":
        for v in _variants(rng, [("framework", FRAMEWORKS[:3], 1, 3),
                                 ("precision", PRECISIONS, 2, 4)]):
            disp = f"{arch}-{size} (pre-training) - {ds} for {v['framework']} {v['precision']}"
            mach = f"{arch}_{FW_SHORT[v['framework']]}_ckpt_{size}_{short}_{dss}_{v['precision']}"
            out.append((disp, mach.lower().replace("-", "_"), v))
        return f"{arch} {size} pre {ds}", "Language Modeling", out
    for v in _variants(rng, [("framework", FRAMEWORKS[:2], 1, 2), ("precision", PRECISIONS, 2, 4),
                             ("seqlen", ("128", "384", "512"), 1, 2), ("gpu", GPUS, 1, 2)]):
        disp = f"{arch}-{size} (fine-tuning) - {ds}, seqLen={v['seqlen']} {v['gpu']}"
        mach = (f"{arch}_{FW_SHORT[v['framework']]}_ckpt_{size}_{short}_{dss}"
                f"_{v['precision']}_{v['seqlen']}_{v['gpu']}")
        out.append((disp, mach.lower().replace("-", "_"), v))
    return f"{arch} {size} {short} {ds}", {"qa": "Question Answering",
                                           "ner": "Named Entity Recognition"}.get(
        short, "Text Classification"), out


def _tlt(rng: random.Random) -> Family:
    bb, task = rng.choice(CV_BACKBONES), rng.choice(CV_TASKS)
    prefix = rng.choice(("TLT", "TAO", "TLT"))
    out = []
    for v in _variants(rng, [("precision", PRECISIONS[:3], 1, 3), ("gpu", GPUS, 2, 4)]):
        disp = f"{prefix} {bb} {task} ({v['precision']}, {v['gpu']})"
        mach = f"{prefix}_{bb}_{task}_{v['precision']}_{v['gpu']}".lower()
        out.append((disp, mach.replace(" ", "_").replace("-", "_"), {**v, "framework": "TLT"}))
    return (f"{prefix} {bb} {task}",
            "Object Detection" if task != "Classification" else "Classification", out)


def _onnx(rng: random.Random) -> Family:
    bb = rng.choice(CV_BACKBONES).replace(" ", "")
    out = []
    for v in _variants(rng, [("gpu", GPUS, 2, 4), ("precision", PRECISIONS[:3], 2, 3),
                             ("trt", ("5.0.2", "6.0.1", "7.2.3", "8.4.1"), 1, 2)]):
        disp = f"ONNX {bb} TensorRT {v['trt']} {v['gpu']} {v['precision']}"
        mach = f"onnx_{bb}_trt{v['trt'].replace('.', '')}_{v['gpu']}_{v['precision']}".lower()
        out.append((disp, mach.replace("-", "_"), {**v, "framework": "TensorRT"}))
    return bb, "Classification", out


def _clara(rng: random.Random) -> Family:
    task, mod, organ = (rng.choice(x) for x in CLARA)
    out = []
    base = f"{task}_{mod}_{organ}"
    for v in _variants(rng, [("precision", ("FP32", "AMP", "TF32"), 1, 3), ("gpu", GPUS, 2, 4)]):
        out.append((f"{base} {v['precision']} {v['gpu']}",
                    f"clara_{base}_{v['precision']}_{v['gpu']}".lower().replace("-", "_"),
                    {**v, "framework": "Clara Train"}))
    return base, "Segmentation" if task != "classification" else "Classification", out


def _resource(rng: random.Random) -> Family:
    model = rng.choice(SPEECH + NLP_ARCH + tuple(b for b in CV_BACKBONES[:8]))
    ver = rng.choice(("", " v1.5", " v2", " v1.1"))
    out = []
    for v in _variants(rng, [("framework", FRAMEWORKS, 2, 4), ("precision", PRECISIONS, 2, 4)]):
        disp = f"{model}{ver} for {v['framework']} ({v['precision']})"
        mach = f"{model}{ver}_for_{v['framework']}_{v['precision']}".lower()
        out.append((disp, mach.replace(" ", "_").replace("-", "_").replace(".", "_"), v))
    return f"{model}{ver}", "Speech Recognition" if model in SPEECH else "Deep Learning", out


def _image(rng: random.Random) -> Family:
    prod = rng.choice(IMAGES)
    out = []
    for v in _variants(rng, [("platform", ("", "-l4t", " (Jetson)", " A100", " H100"), 1, 3)]):
        out.append((f"{prod}{v['platform']}",
                    f"{prod}{v['platform']}".lower().replace(" ", "-").strip("()-"), v))
    return prod, "Containers", out


MAKERS: list[tuple[str, Callable[[random.Random], Family], int]] = [
    ("model", _nlp, 30), ("model", _tlt, 20), ("model", _onnx, 12), ("model", _clara, 8),
    ("resource", _resource, 18), ("image", _image, 12)]


def _syllable_name(rng: random.Random) -> str:
    syl = ("ka", "vo", "ne", "tri", "lu", "mor", "zen", "qua", "dex", "pi", "ro", "sa", "tor")
    return "".join(rng.choice(syl) for _ in range(rng.randint(2, 3))).capitalize()


def _description(rng: random.Random, disp: str, app: str, fw: str | None) -> str:
    words = [rng.choice(VOCAB) if rng.random() < 0.6
             else VOCAB[min(int(rng.expovariate(1 / 12)), len(VOCAB) - 1)]
             for _ in range(rng.randint(38, 58))]
    head = disp.split(" (")[0].split(",")[0]
    words[rng.randrange(len(words))] = f"{head} is a {app.lower()} model"
    if fw:
        words.insert(rng.randrange(len(words)), f"for {fw}")
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _versions(rng: random.Random) -> list[str]:
    count = rng.choice((1, 1, 2, 2, 3, 4, 5))
    major = rng.randint(1, 3)
    return [f"{major}.{i}.{rng.randint(0, 9)}" for i in range(count, 0, -1)]


def families(seed: int = 7) -> Iterator[list[IndexDoc]]:
    """An endless, deterministic stream of families (each a list of docs)."""
    rng = random.Random(seed)
    weights = [w for _, _, w in MAKERS]
    seen: set[str] = set()
    identities: set[tuple[str, str, str | None]] = set()
    for fam_no in itertools.count():
        kind, maker, _ = rng.choices(MAKERS, weights=weights)[0]
        ident, app, variants = maker(rng)
        # most families get a made-up product word, so there are many distinct names
        extra = _syllable_name(rng) if rng.random() < 0.6 else None
        while (kind, ident, extra) in identities:
            extra = _syllable_name(rng)
        identities.add((kind, ident, extra))
        org = rng.choice(ORGS)
        team = rng.choice(TEAMS)
        docs = []
        for disp, mach, v in variants:
            if extra:
                disp, mach = f"{extra} {disp}", f"{extra.lower()}_{mach}"
            path = "/".join(p for p in (org, team, mach) if p)
            if path in seen:
                continue
            seen.add(path)
            fw = v.get("framework")
            labels = [app, *([fw] if fw else []), rng.choice(("NGC", "Catalog", "Partner")),
                      *rng.sample(("Jetson", "Data Center", "Edge", "Cloud", "Healthcare"),
                                  rng.randint(0, 2))]
            vers = _versions(rng)
            docs.append(IndexDoc(
                kind=kind, path=path, display_name=disp, name=mach,
                description=_description(rng, disp, app, fw), labels=labels, framework=fw,
                precision=v.get("precision"), application=app, latest_version=vers[0],
                versions=vers, updated=f"20{rng.randint(19, 25)}-{rng.randint(1, 12):02d}-01",
                mirrored=rng.random() < 0.2))
        for d in docs:
            d.family = f"gen-{fam_no}"  # the generator's truth; writer.enrich overwrites it
        if docs:
            yield docs


def generate(n: int, seed: int = 7) -> list[IndexDoc]:
    """The first `n` docs of the family stream (a prefix: 10k docs are the start of 100k)."""
    out: list[IndexDoc] = []
    for fam in families(seed):
        out.extend(fam[: n - len(out)])
        if len(out) >= n:
            break
    rng = random.Random(seed + n)
    for d in rng.sample(out, RARE_COUNT):
        d.description += f" Trained on the {RARE_WORD} corpus."
    return out


if __name__ == "__main__":
    import sys
    from collections import Counter

    docs = generate(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    fams = Counter(d.family for d in docs)
    print(f"{len(docs)} docs, {len(fams)} families, {len(docs) / len(fams):.1f} per family;",
          dict(Counter(d.kind for d in docs)))
    for d in docs[:12]:
        print(f"  {d.kind:8} {d.path:60} | {d.display_name}")
    print("  ", docs[0].description)
