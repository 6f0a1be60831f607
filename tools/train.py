#!/usr/bin/python3
"""Train dermal's default model: MobileNetV2 (ImageNet, from TFLite) fine-tuned on HAM10000.

Usage (what `make model` runs):
    TRAIN_THREADS=2 /usr/bin/python3 tools/train.py --epochs 12 --deadline-min 85 \
        --relative-lr 1e-3 --ema 0.998 --logit-adjust 0.15 --out models/dermal-ham10000.onnx
Options: --fresh (ignore build/train/ckpt.pt), --limit N (smoke run on N train
and N val images, in build/train/smoke/), --data DIR (default
../shared/data/ham10000), --freeze K (features[:K], i.e. the stem and the
first K-1 inverted residual blocks, the layers at 112x112, 56x56 and 28x28,
keep their ImageNet weights and run without autograd: on 2 shared cores the
backward pass through them would cost more than the rest of the network).

Steps:
 1. Check the TFLite -> PyTorch port (ImageNet top-1 on cat.bmp/grace_hopper.bmp).
 2. Decode + resize (PIL bilinear, 224x224 direct) every image once; cache the
    uint8 tensors in build/train-cache/{train,val}.npy (reused when the id list
    matches).
 3. Replace the 1001-class head by Dropout(0.2) + Linear(1280, 7). The first
    --head-steps steps train the head only; then everything after
    features[:K], AdamW with a per-step cosine schedule (linear warmup).
    Class-weighted cross-entropy (weights ~ (1/frequency)^POWER) with label
    smoothing. Augmentation on the cached uint8 tensors (torch): flips,
    90-degree rotations, random resized crop (area 0.8-1),
    brightness/contrast/saturation jitter.
 4. After every epoch: accuracy and balanced accuracy on `val`; their mean
    selects the model, checkpoint
    build/train/ckpt.pt (model, optimizer, scheduler, epoch, best, RNG states;
    resumed automatically), best weights in build/train/best.pt.
 5. Stop after --epochs. With --deadline-min M, before each epoch the number
    of epochs that still fit in M minutes from this run's start (keeping time
    for the final evaluation and export) is estimated from the epochs so far;
    when fewer than --epochs fit, the cosine schedule is re-fitted to end at
    the last one. Then: val metrics of the best weights ->
    build/train/metrics.json; ONNX export (opset 13, input "input"
    [1,3,224,224], output "logits" [1,7], pre-softmax; Pad folded into Conv,
    Relu+Clip -> Clip) with dermal's metadata_props; when build/dermal exists,
    its output on a val image is compared with PyTorch's.

Needs Debian's python3-torch, python3-onnx, python3-numpy, python3-pil,
python3-flatbuffers: run with /usr/bin/python3.
"""

import argparse
import csv
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from tflite_mobilenet import check_imagenet, load_mobilenet_v2  # noqa: E402

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
LONG_NAMES = [
    "Actinic keratoses and intraepithelial carcinoma / Bowen's disease",
    "Basal cell carcinoma",
    "Benign keratosis-like lesions (solar lentigines, seborrheic keratoses, lichen-planus like keratoses)",
    "Dermatofibroma",
    "Melanoma",
    "Melanocytic nevi",
    "Vascular lesions (angiomas, angiokeratomas, pyogenic granulomas, haemorrhage)",
]
SIZE = 224
MODEL_VERSION = "1.0.0"
SEED = 20261127


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------------------
# Data: split.csv -> cached uint8 tensors [N, 224, 224, 3]
# ---------------------------------------------------------------------------

def read_split(data_dir):
    rows = {"train": [], "val": []}
    with open(os.path.join(data_dir, "split.csv"), newline="") as f:
        for r in csv.DictReader(f):
            rows[r["split"]].append((r["image_id"], CLASSES.index(r["dx"]), r["lesion_id"]))
    tr = {r[2] for r in rows["train"]}
    va = {r[2] for r in rows["val"]}
    assert not (tr & va), "a lesion straddles train and val"
    return rows


def load_cached(data_dir, split, rows, cache_dir):
    """uint8 [N,224,224,3] (memory-mapped), PIL bilinear direct resize, RGB."""
    from PIL import Image
    ids = [r[0] for r in rows]
    key = hashlib.sha256(("\n".join(ids) + "|%d|bilinear" % SIZE).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, "%s.npy" % split)
    keyfile = path + ".key"
    if os.path.exists(path) and os.path.exists(keyfile) and open(keyfile).read().strip() == key:
        return np.load(path, mmap_mode="r")
    os.makedirs(cache_dir, exist_ok=True)
    t0 = time.time()
    tmp = path + ".tmp.npy"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(ids), SIZE, SIZE, 3))
    for i, image_id in enumerate(ids):
        with Image.open(os.path.join(data_dir, "images", image_id + ".jpg")) as im:
            arr[i] = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    arr.flush()
    del arr
    os.replace(tmp, path)
    with open(keyfile, "w") as f:
        f.write(key + "\n")
    log("cached %d %s images in %s (%.0f s)" % (len(ids), split, path, time.time() - t0))
    return np.load(path, mmap_mode="r")


def normalize(x):
    """uint8 NHWC batch (numpy) -> float NCHW, pixels/255, mean 0.5, std 0.5."""
    t = torch.from_numpy(np.array(x, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    return t.sub_(0.5).div_(0.5)


def augment(x_u8, gen):
    """Dermoscopy augmentation of a uint8 NHWC batch; returns normalised NCHW float.

    One affine grid per image: random 90-degree rotation, horizontal/vertical
    flip, random resized crop (area 0.8-1, aspect 3/4-4/3, random position),
    sampled bilinearly; then brightness, contrast, saturation x U(0.9, 1.1).
    """
    n = x_u8.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(x_u8)).permute(0, 3, 1, 2).float().div_(255.0)
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    k = torch.randint(0, 4, (n,), generator=gen).float() * (math.pi / 2)
    cos, sin = torch.cos(k).round(), torch.sin(k).round()
    fx = torch.where(u(n) < 0.5, -1.0, 1.0)
    fy = torch.where(u(n) < 0.5, -1.0, 1.0)
    area = 0.8 + 0.2 * u(n)
    logr = (u(n) * 2 - 1) * math.log(4 / 3)
    sx = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
    sy = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
    tx = (u(n) * 2 - 1) * (1 - sx)
    ty = (u(n) * 2 - 1) * (1 - sy)
    theta = torch.zeros(n, 2, 3)
    # output coords -> rotate/flip -> scale -> translate into input coords
    theta[:, 0, 0] = sx * cos * fx
    theta[:, 0, 1] = -sx * sin * fy
    theta[:, 1, 0] = sy * sin * fx
    theta[:, 1, 1] = sy * cos * fy
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    b = (0.9 + 0.2 * u(n)).view(n, 1, 1, 1)
    c = (0.9 + 0.2 * u(n)).view(n, 1, 1, 1)
    s = (0.9 + 0.2 * u(n)).view(n, 1, 1, 1)
    x = x * b
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = gray.mean(dim=(2, 3), keepdim=True) * (1 - c) + x * c
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = gray * (1 - s) + x * s
    return x.clamp_(0, 1).sub_(0.5).div_(0.5)


# ---------------------------------------------------------------------------
# Model, metrics
# ---------------------------------------------------------------------------

def build_model():
    m = load_mobilenet_v2()
    m.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, len(CLASSES)))
    return m


def set_trainable(model, head_only, freeze):
    for i, block in enumerate(model.features):
        for p in block.parameters():
            p.requires_grad_(not head_only and i >= freeze)


@torch.no_grad()
def predict(model, x_u8, bs=64):
    model.eval()
    out = []
    for i in range(0, len(x_u8), bs):
        out.append(model(normalize(x_u8[i:i + bs]).contiguous(memory_format=torch.channels_last)))
    return torch.cat(out).numpy()


def metrics(y, logits):
    pred = logits.argmax(1)
    k = len(CLASSES)
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    per = {}
    recalls = []
    for i, c in enumerate(CLASSES):
        sup = int(cm[i].sum())
        tp = int(cm[i, i])
        rec = tp / sup if sup else None
        prec = tp / int(cm[:, i].sum()) if cm[:, i].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if rec and prec + rec > 0 else 0.0
        per[c] = {"precision": prec, "recall": rec, "f1": f1, "support": sup}
        if sup:
            recalls.append(rec)
    return {"accuracy": float((pred == y).mean()), "balanced_accuracy": float(np.mean(recalls)),
            "per_class": per, "labels": CLASSES, "confusion": cm.tolist(), "n": int(len(y))}


# ---------------------------------------------------------------------------
# ONNX export
# ---------------------------------------------------------------------------

def fold_constants(graph):
    """Evaluate the small shape subgraphs the exporter leaves in front of Pad
    (torch 1.13 does not fold a Slice with step -1) and store the results as
    initializers, so that fold_pads() sees constant pads."""
    from onnx import numpy_helper
    const = {i.name: numpy_helper.to_array(i) for i in graph.initializer}

    def attr(n, name, default=None):
        for a in n.attribute:
            if a.name == name:
                return onnx_attr(a)
        return default

    def onnx_attr(a):
        import onnx
        return onnx.helper.get_attribute_value(a)

    folded = []
    for n in graph.node:
        ins = [i for i in n.input if i]
        if n.op_type == "Constant":
            const[n.output[0]] = numpy_helper.to_array(attr(n, "value"))
            folded.append(n)
            continue
        if not all(i in const for i in ins):
            continue
        v = [const[i] for i in ins]
        op = n.op_type
        if op == "ConstantOfShape":
            fill = attr(n, "value")
            fill = numpy_helper.to_array(fill) if fill is not None else np.zeros(1, np.float32)
            r = np.full(tuple(int(d) for d in v[0]), fill.reshape(-1)[0], dtype=fill.dtype)
        elif op == "Concat":
            r = np.concatenate(v, axis=attr(n, "axis"))
        elif op == "Reshape":
            shape = [int(d) if int(d) != 0 else v[0].shape[k] for k, d in enumerate(v[1])]
            r = v[0].reshape(shape)
        elif op == "Transpose":
            r = np.transpose(v[0], attr(n, "perm"))
        elif op == "Cast":
            from onnx import mapping
            r = v[0].astype(mapping.TENSOR_TYPE_TO_NP_TYPE[attr(n, "to")])
        elif op == "Slice":
            data, starts, ends = v[0], v[1], v[2]
            axes = v[3] if len(v) > 3 else np.arange(len(starts))
            steps = v[4] if len(v) > 4 else np.ones(len(starts), np.int64)
            sl = [slice(None)] * data.ndim
            for a, b, e, st in zip(axes, starts, ends, steps):
                dim = data.shape[int(a)]
                b, e, st = int(b), int(e), int(st)
                b = max(min(b + dim if b < 0 else b, dim - (st < 0)), -1 if st < 0 else 0)
                if e < -dim - 1 or e <= -2**62:
                    e = None
                else:
                    e = e + dim if e < 0 else min(e, dim)
                sl[int(a)] = slice(b, e, st)
            r = data[tuple(sl)]
        else:
            continue
        const[n.output[0]] = np.asarray(r)
        folded.append(n)
    used = {i for n in graph.node if n not in folded for i in n.input}
    for n in folded:
        graph.node.remove(n)
        if n.output[0] in used:
            graph.initializer.append(numpy_helper.from_array(const[n.output[0]], n.output[0]))
    return len(folded)


def drop_relu_before_clip(graph):
    """Relu -> Clip(min >= 0, max) (how torch 1.13 exports ReLU6) -> one Clip."""
    from onnx import numpy_helper
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    users = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    drop = []
    for n in graph.node:
        if n.op_type != "Relu" or len(users.get(n.output[0], [])) != 1:
            continue
        clip = users[n.output[0]][0]
        if clip.op_type != "Clip" or len(clip.input) < 2 or clip.input[1] not in inits:
            continue
        if float(inits[clip.input[1]].reshape(-1)[0]) < 0:
            continue
        clip.input[0] = n.input[0]
        drop.append(n)
    for n in drop:
        graph.node.remove(n)
    return len(drop)


def fold_pads(graph):
    """Pad(constant 0, spatial only) -> Conv: move the pads into Conv.pads."""
    import onnx
    from onnx import numpy_helper
    inits = {i.name: i for i in graph.initializer}
    consts = {}
    for n in graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    users = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    drop = []
    for n in graph.node:
        if n.op_type != "Pad":
            continue
        mode = [a.s for a in n.attribute if a.name == "mode"]
        if mode and mode[0] != b"constant":
            continue
        if len(n.input) > 2 and n.input[2]:
            v = inits.get(n.input[2])
            v = numpy_helper.to_array(v) if v is not None else consts.get(n.input[2])
            if v is None or float(np.asarray(v).reshape(-1)[0]) != 0.0:
                continue
        pads = inits.get(n.input[1])
        pads = numpy_helper.to_array(pads) if pads is not None else consts.get(n.input[1])
        if pads is None or len(users.get(n.output[0], [])) != 1:
            continue
        conv = users[n.output[0]][0]
        pads = [int(v) for v in np.asarray(pads).reshape(-1)]
        if conv.op_type != "Conv" or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
            continue
        old = [a for a in conv.attribute if a.name == "pads"]
        cur = list(old[0].ints) if old else [0, 0, 0, 0]
        new = [cur[0] + pads[2], cur[1] + pads[3], cur[2] + pads[6], cur[3] + pads[7]]
        for a in old:
            conv.attribute.remove(a)
        conv.attribute.append(onnx.helper.make_attribute("pads", new))
        conv.input[0] = n.input[0]
        drop.append(n)
    for n in drop:
        graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for name in [i.name for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(next(i for i in graph.initializer if i.name == name))
    for n in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(n)
    return len(drop)


def export_onnx(model, out, val_metrics, n_train, data_dir):
    import onnx
    model.eval()
    dummy = torch.zeros(1, 3, SIZE, SIZE)
    fd, tmp = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    model = model.to(memory_format=torch.contiguous_format)
    torch.onnx.export(model, dummy, tmp, opset_version=13, input_names=["input"],
                      output_names=["logits"], do_constant_folding=True)
    m = onnx.load(tmp)
    os.unlink(tmp)
    for vi, dims in ((m.graph.input[0], [1, 3, SIZE, SIZE]), (m.graph.output[0], [1, len(CLASSES)])):
        shape = vi.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            shape.dim.add().dim_value = d
    fold_constants(m.graph)
    folded = fold_pads(m.graph)
    drop_relu_before_clip(m.graph)
    from collections import Counter
    log("ONNX ops: %s" % dict(Counter(n.op_type for n in m.graph.node)))
    pools = [n for n in m.graph.node if n.op_type in ("GlobalAveragePool", "ReduceMean")]
    assert len(pools) == 1, "expected one global pooling node"
    target = pools[0].input[0]
    producer = next(n for n in m.graph.node if target in n.output)
    assert producer.op_type in ("Clip", "Relu"), producer.op_type
    rel_data = os.path.relpath(data_dir, ROOT)
    meta = {
        "labels": ",".join(CLASSES),
        "label_names": "|".join(LONG_NAMES),
        "input_size": str(SIZE),
        "resize": "direct",
        "interpolation": "bilinear",
        "mean": "0.5,0.5,0.5",
        "std": "0.5,0.5,0.5",
        "color": "RGB",
        "layout": "NCHW",
        "gradcam_target": target,
        "model_version": MODEL_VERSION,
        "architecture": "MobileNetV2 1.0 224 (ImageNet weights from TensorFlow's mobilenet_v2_1.0_224_quant.tflite, dequantized)",
        "training_data": "HAM10000 train split (lesion-level), %d images, %s" % (n_train, rel_data),
        "licence": "CC BY-NC 4.0 (trained on HAM10000); backbone weights Apache-2.0 (TensorFlow MobileNet v2)",
        "val_accuracy": "%.4f" % val_metrics["accuracy"],
        "val_balanced_accuracy": "%.4f" % val_metrics["balanced_accuracy"],
        "val_images": str(val_metrics["n"]),
    }
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "dermal tools/train.py"
    onnx.checker.check_model(m)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    onnx.save(m, out)
    log("exported %s (%.1f MB, %d Pad folded into Conv), gradcam_target=%s" % (
        out, os.path.getsize(out) / 1e6, folded, target))
    return target


def check_with_dermal(model, out, x):
    """Compare the exported file run by build/dermal with PyTorch (when built)."""
    exe = os.path.join(ROOT, "build", "dermal")
    if not os.access(exe, os.X_OK):
        log("build/dermal not found: skipping the ONNX-vs-PyTorch check")
        return None
    model.eval()
    with torch.no_grad():
        ref = model(x).numpy()
    with tempfile.TemporaryDirectory() as d:
        xi, yo = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
        np.save(xi, x.numpy().astype(np.float32))
        r = subprocess.run([exe, "run", out, "--input", xi, "--output", yo],
                           capture_output=True, text=True)
        if r.returncode != 0:
            log("build/dermal run failed (%d): %s" % (r.returncode, r.stderr.strip()[-500:]))
            return None
        got = np.load(yo)
    diff = float(np.abs(got.reshape(ref.shape) - ref).max())
    log("ONNX (build/dermal) vs PyTorch: max |diff| = %.2e on logits %s" % (diff, np.round(ref[0], 3)))
    assert diff < 1e-3 * max(1.0, float(np.abs(ref).max())), "exported model disagrees with PyTorch"
    return diff


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

def rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["random"])


def keep_buffers_in_heap():
    """glibc returns torch's large per-batch buffers to the kernel and faults
    them in again every step (a third of the CPU time was system time): keep
    them in the heap instead. Re-execs the script so that malloc sees it."""
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 30)
        os.environ["MALLOC_TRIM_THRESHOLD_"] = str(1 << 32)
        os.execv(sys.executable, [sys.executable] + sys.argv)


def main():
    keep_buffers_in_heap()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "ham10000")))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--deadline-min", type=float, default=0, help="0 = no deadline")
    ap.add_argument("--limit", type=int, default=0, help="smoke run on N train and N val images")
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "dermal-ham10000.onnx"))
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5,
                    help="peak learning rate of the backbone (BatchNorm is folded into the TFLite "
                         "convolutions, so Adam steps are not scale-invariant: keep them small)")
    ap.add_argument("--relative-lr", type=float, default=0.0,
                    help="when > 0, each backbone tensor's peak learning rate is this times its "
                         "RMS at initialisation (and --lr is ignored)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="decay per step of an exponential moving average of the weights "
                         "(0 = none); the average is evaluated and selectable too")
    ap.add_argument("--logit-adjust", type=float, default=0.0,
                    help="add TAU * log(train class frequency) to the final bias of the selected "
                         "weights (post-hoc logit adjustment: trades balanced accuracy for accuracy)")
    ap.add_argument("--head-lr", type=float, default=1e-3, help="peak learning rate of the new head")
    ap.add_argument("--head-steps", type=int, default=-1,
                    help="first steps train the new head only (-1: one epoch)")
    ap.add_argument("--weight-decay", type=float, default=0.02)
    ap.add_argument("--class-weight-power", type=float, default=0.5,
                    help="class weights ~ (1/frequency)^POWER (1 = fully balanced, 0 = none)")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--freeze", type=int, default=7,
                    help="features[:K] stay at ImageNet weights (stem + first K-1 blocks)")
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "train"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "build", "train-cache"))
    args = ap.parse_args()

    t_start = time.time()
    threads = int(os.environ.get("TRAIN_THREADS", "2"))
    torch.set_num_threads(threads)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    work = args.work if not args.limit else os.path.join(args.work, "smoke")
    os.makedirs(work, exist_ok=True)
    ckpt_path = os.path.join(work, "ckpt.pt")
    best_path = os.path.join(work, "best.pt")
    log("dermal train: threads=%d epochs=%d deadline=%s min limit=%s out=%s" % (
        threads, args.epochs, args.deadline_min or "none", args.limit or "none", args.out))

    # 1. the ImageNet port
    assert check_imagenet(load_mobilenet_v2(), verbose=True), "TFLite MobileNetV2 port check failed"

    # 2. data
    rows = read_split(args.data)
    xtr = load_cached(args.data, "train", rows["train"], args.cache)
    xva = load_cached(args.data, "val", rows["val"], args.cache)
    ytr = np.array([r[1] for r in rows["train"]], dtype=np.int64)
    yva = np.array([r[1] for r in rows["val"]], dtype=np.int64)
    itr = np.arange(len(ytr))
    iva = np.arange(len(yva))
    if args.limit:
        sub = np.random.RandomState(SEED)
        itr = np.sort(sub.permutation(len(ytr))[:args.limit])
        iva = np.sort(sub.permutation(len(yva))[:args.limit])
    xva_l = np.asarray(xva[iva]) if args.limit else np.asarray(xva)   # small: keep in RAM
    yva_l = yva[iva]
    ytr_l = ytr[itr]
    counts = np.bincount(ytr_l, minlength=len(CLASSES)).astype(np.float64)
    log("train %d images %s, val %d images %s" % (
        len(itr), dict(zip(CLASSES, counts.astype(int).tolist())), len(iva),
        dict(zip(CLASSES, np.bincount(yva_l, minlength=len(CLASSES)).tolist()))))
    freq = np.maximum(counts, 1) / counts.sum()
    w = (1.0 / freq) ** args.class_weight_power
    w = w / (w * freq).sum()            # mean weight over the training distribution = 1
    log("class weights", dict(zip(CLASSES, np.round(w, 3).tolist())))
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32),
                                    label_smoothing=args.label_smoothing)

    # 3. model, optimiser, schedule
    model = build_model().to(memory_format=torch.channels_last)
    steps = math.ceil(len(itr) / args.batch)
    if args.head_steps < 0:
        args.head_steps = steps
    groups = []
    if args.relative_lr > 0:
        # One group per backbone tensor, its learning rate proportional to the
        # tensor's RMS at ImageNet initialisation. BatchNorm is folded into the
        # TFLite convolutions, so their weights differ in scale by 50x (expand
        # 1x1 convs ~0.02, depthwise ~0.7): one absolute Adam step size moves
        # the first by percents per step and leaves the second frozen.
        for p in model.features.parameters():
            rms = float(p.detach().pow(2).mean().sqrt())
            groups.append({"params": [p], "weight_decay": args.weight_decay if p.ndim > 1 else 0.0,
                           "lr": args.relative_lr * max(rms, 1e-3)})
    else:
        groups.append({"params": [p for p in model.features.parameters() if p.ndim > 1],
                       "weight_decay": args.weight_decay, "lr": args.lr})
        groups.append({"params": [p for p in model.features.parameters() if p.ndim <= 1],
                       "weight_decay": 0.0, "lr": args.lr})
    for wd, ps in ((args.weight_decay, [p for p in model.classifier.parameters() if p.ndim > 1]),
                   (0.0, [p for p in model.classifier.parameters() if p.ndim <= 1])):
        groups.append({"params": ps, "weight_decay": wd, "lr": args.head_lr, "head": True})
    opt = torch.optim.AdamW(groups, lr=args.lr)
    # exponential moving average of the weights (no BatchNorm, so no buffers
    # to re-estimate): evaluated beside the raw weights after every epoch
    ema = None
    if args.ema > 0:
        ema = build_model()
        ema.load_state_dict(model.state_dict())
        ema = ema.to(memory_format=torch.channels_last)
        for p in ema.parameters():
            p.requires_grad_(False)
    # plan["epochs"] is --epochs unless the deadline forces fewer (then the
    # cosine is re-fitted so that it still ends at the last epoch that fits)
    plan = {"epochs": args.epochs}
    warm = min(steps // 2, 100)

    def lr_at(step):    # step counts backbone steps (after the head-only steps)
        total = max(1, plan["epochs"] * steps - args.head_steps)
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start_epoch, best, history = 0, -1.0, []
    if os.path.exists(ckpt_path) and not args.fresh:
        ck = torch.load(ckpt_path)
        if ck.get("epochs") != args.epochs or ck.get("limit") != args.limit:
            log("checkpoint was for --epochs %s --limit %s: the schedule differs, continuing anyway" % (
                ck.get("epochs"), ck.get("limit")))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, best, history = ck["epoch"] + 1, ck["best"], ck["history"]
        set_rng_state(ck["rng"])
        if ema is not None and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
        log("resumed from %s: next epoch %d, best val score %.4f" % (ckpt_path, start_epoch, best))

    # 4. epochs
    epoch_times = []            # this run's epochs (train + val), seconds
    val_secs = 0.0
    for epoch in range(start_epoch, args.epochs):
        if epoch >= plan["epochs"]:
            break
        if args.deadline_min and epoch_times:
            left = args.deadline_min * 60 - (time.time() - t_start) - (val_secs + 60)  # final eval + export
            est = max(epoch_times[-2:]) * 1.05
            fit = int(left // est)
            if epoch + fit < plan["epochs"]:
                plan["epochs"] = max(epoch + fit, epoch)
                log("deadline %.0f min: epochs take ~%.1f min, %.1f min left: %d epochs in all "
                    "(cosine schedule re-fitted)" % (args.deadline_min, est / 60, left / 60, plan["epochs"]))
                if fit <= 0:
                    break
        t0 = time.time()
        model.train()
        gen = torch.Generator().manual_seed(SEED * 1000 + epoch)
        order = itr[torch.randperm(len(itr), generator=gen).numpy()]
        tot, nb, trainable = 0.0, 0, None
        for b in range(0, len(order), args.batch):
            gstep = epoch * steps + nb
            head_only = gstep < args.head_steps
            if trainable != head_only:
                set_trainable(model, head_only, args.freeze)
                trainable = head_only
            if gstep == args.head_steps:     # back to the schedule's learning rate
                for g, base in zip(opt.param_groups, sched.base_lrs):
                    g["lr"] = base * lr_at(sched.last_epoch)
            idx = np.sort(order[b:b + args.batch])           # sorted: sequential mmap reads
            x = augment(xtr[idx], gen).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(ytr[idx])
            k = len(model.features) if head_only else args.freeze
            with torch.no_grad():                            # frozen part: no autograd graph
                h = model.features[:k](x)
            h = model.features[k:](h)
            loss = criterion(model.classifier(torch.flatten(model.pool(h), 1)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if head_only:                                    # constant head learning rate
                for g in opt.param_groups:
                    g["lr"] = args.head_lr
            else:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            opt.step()
            if not head_only:
                sched.step()
            if ema is not None:
                with torch.no_grad():
                    if gstep == args.head_steps:     # the average starts with the backbone steps
                        for pe, pm in zip(ema.parameters(), model.parameters()):
                            pe.copy_(pm)
                    elif gstep > args.head_steps:
                        k_ema = gstep - args.head_steps
                        d = min(args.ema, (1 + k_ema) / (10 + k_ema))
                        for pe, pm in zip(ema.parameters(), model.parameters()):
                            pe.mul_(d).add_(pm, alpha=1 - d)
            tot += float(loss)
            nb += 1
            if nb % 50 == 0:
                log("  epoch %d batch %d/%d loss %.4f (%.1f s/batch)" % (
                    epoch, nb, steps, tot / nb, (time.time() - t0) / nb))
        t_train = time.time() - t0
        # model selection: the mean of accuracy and balanced accuracy, since
        # the model must be good on both (the bars are 0.82 and 0.72); with
        # --ema the moving average competes with the raw weights
        cands = [("raw", model)] + ([("ema", ema)] if ema is not None and epoch > 0 else [])
        mv, improved, which, ema_val = None, False, None, None
        for name, m in cands:
            mc = metrics(yva_l, predict(m, xva_l))
            score = 0.5 * (mc["accuracy"] + mc["balanced_accuracy"])
            if name == "raw":
                mv = mc
            else:
                ema_val = mc
                log("  ema weights: val acc %.4f, bal acc %.4f" % (mc["accuracy"], mc["balanced_accuracy"]))
            if score > best:
                best, improved, which = score, True, name
                torch.save({"model": m.state_dict(), "epoch": epoch, "weights": name, "val": mc},
                           best_path)
        secs = time.time() - t0
        val_secs = secs - t_train
        epoch_times.append(secs)
        history.append({"epoch": epoch, "loss": tot / max(nb, 1),
                        "lr_end": {"backbone_first": opt.param_groups[0]["lr"],
                                   "head": opt.param_groups[-1]["lr"]},
                        "val_accuracy": mv["accuracy"],
                        "val_balanced_accuracy": mv["balanced_accuracy"], "seconds": secs,
                        "recall": {c: mv["per_class"][c]["recall"] for c in CLASSES},
                        "best": which,
                        "ema_val": None if ema_val is None else {
                            "accuracy": ema_val["accuracy"], "balanced_accuracy": ema_val["balanced_accuracy"]}})
        log("epoch %d/%d: loss %.4f, val acc %.4f, bal acc %.4f%s, train %.1f min, total %.1f min" % (
            epoch, plan["epochs"], tot / max(nb, 1), mv["accuracy"],
            mv["balanced_accuracy"], (" *best* (%s)" % which) if improved else "", t_train / 60, secs / 60))
        log("  recall " + " ".join("%s %.2f" % (c, mv["per_class"][c]["recall"] or 0) for c in CLASSES))
        tmp = ckpt_path + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "epoch": epoch, "best": best,
                    "ema": None if ema is None else ema.state_dict(),
                    "history": history, "rng": rng_state(), "epochs": args.epochs,
                    "limit": args.limit, "plan_epochs": plan["epochs"], "args": vars(args)}, tmp)
        os.replace(tmp, ckpt_path)

    # 5. best weights -> metrics, ONNX
    if not os.path.exists(best_path):
        sys.exit("no trained epoch (best.pt missing)")
    bk = torch.load(best_path)
    model = build_model()
    model.load_state_dict(bk["model"])
    model.eval()
    if args.logit_adjust:
        with torch.no_grad():
            model.classifier[1].bias.add_(torch.tensor(args.logit_adjust * np.log(freq), dtype=torch.float32))
        log("logit adjustment: bias += %.3f * log(train class frequency)" % args.logit_adjust)
    mv = metrics(yva_l, predict(model.to(memory_format=torch.channels_last), xva_l))
    mv.update({"best_epoch": bk["epoch"], "best_weights": bk.get("weights", "raw"), "history": history, "train_images": int(len(itr)),
               "epochs_run": len(history), "threads": threads, "args": vars(args),
               "minutes": (time.time() - t_start) / 60})
    with open(os.path.join(work, "metrics.json"), "w") as f:
        json.dump(mv, f, indent=1)
    log("best epoch %d: val accuracy %.4f, balanced accuracy %.4f -> %s" % (
        bk["epoch"], mv["accuracy"], mv["balanced_accuracy"], os.path.join(work, "metrics.json")))
    log("  confusion (rows = truth, cols = prediction; %s):" % ",".join(CLASSES))
    for c, row in zip(CLASSES, mv["confusion"]):
        log("   %-5s %s" % (c, " ".join("%4d" % v for v in row)))
    export_onnx(model, args.out, mv, int(len(itr)), args.data)
    check_with_dermal(model, args.out, normalize(xva_l[:1]))
    log("done in %.1f min" % ((time.time() - t_start) / 60))


if __name__ == "__main__":
    main()
