#!/usr/bin/python3
"""Out-of-distribution score for dermal's default model: fit, embed, measure.

Usage (`make model` runs it after tools/train.py):
    /usr/bin/python3 tools/ood.py --model models/dermal-ham10000.onnx \
        [--ckpt build/train/best.pt] [--layer 13] [--dim 64] [--out OUT.onnx]

What it does:
 1. Features of every `train` image: the global average of each channel of
    the output of MobileNetV2 block LAYER (default 13: 96 channels at
    14x14), from the trained PyTorch weights and the same cached 224x224
    tensors tools/train.py trains on (no augmentation).  Why a middle block
    and not the penultimate 1280 features: measured with --measure-only, the
    penultimate features separate lesions from ordinary photos poorly (their
    principal directions encode the seven classes, and a cat or a page of
    text lands near some class mean), while the 14x14 block's channel
    statistics describe texture and colour, which is what makes a
    dermatoscopic image look like one.
 2. Fits a class-conditional Gaussian with one shared (tied) covariance,
    shrunk towards a multiple of the identity (Ledoit-Wolf style, fixed
    alpha), whitens with its top-DIM eigenvectors (principal directions),
    and scores an image by its smallest squared Mahalanobis distance to a
    class mean in that space, divided by DIM (about 1 for a typical
    training image).
 3. The threshold is the 99th percentile of the scores of a held-out tenth of
    the training lesions (fitted on the other nine tenths), so `val` is not
    used to choose it; the final fit then uses all training images.
 4. Appends the score to the ONNX graph as a second output "ood_score" [1]:
    GlobalAveragePool -> Flatten -> Gemm (x W) -> Sub (class means, [7, DIM]) -> ReduceSumSquare
    over DIM -> ReduceMin over classes -> Mul 1/DIM; writes metadata_props
    ood_output, ood_threshold, ood_method (docs/model-metadata.md).
 5. Measures on `val` (positives) and a negative set of ordinary photos and
    drawings from Debian packages (python3-skimage's sample images, the two
    test images next to the ImageNet MobileNet weights): AUROC, the share of
    val rejected at the threshold, negatives accepted; writes them into the
    metadata and prints them.  tests/integration/test_ood.sh measures the same
    through the C decoder and engine.

Needs Debian's python3-torch, python3-onnx, python3-numpy, python3-pil:
run with /usr/bin/python3.
"""

import argparse
import glob
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import train as T  # noqa: E402  (the model definition, data cache, export)

SKIMAGE_DATA = "/usr/lib/python3/dist-packages/skimage/data"
SHRINK = 0.1          # covariance shrinkage towards tr(S)/d * I
HOLDOUT_PCT = 99.0    # threshold: this percentile of held-out train scores


def negative_paths(shared):
    """Ordinary photos and drawings that are not dermatoscopic images."""
    paths = sorted(glob.glob(os.path.join(SKIMAGE_DATA, "*.png")) +
                   glob.glob(os.path.join(SKIMAGE_DATA, "*.jpg")))
    paths += sorted(glob.glob(os.path.join(shared, "imagenet-mobilenet", "*.bmp")))
    return paths


def load_negatives(paths, min_side=32):
    """uint8 [N,224,224,3] like the training cache (PIL bilinear, direct)."""
    from PIL import Image
    arr, names = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                if min(im.size) < min_side:
                    continue
                arr.append(np.asarray(im.convert("RGB").resize((T.SIZE, T.SIZE), Image.BILINEAR)))
                names.append(os.path.basename(p))
        except (OSError, ValueError):
            continue            # truncated/unreadable sample files are skipped
    return np.stack(arr) if arr else np.zeros((0, T.SIZE, T.SIZE, 3), np.uint8), names


@torch.no_grad()
def features(model, x_u8, layer, bs=64):
    """Channel means of the output of model.features[layer], float64 [N, C]."""
    model.eval()
    body = model.features[:layer + 1]
    out = []
    for i in range(0, len(x_u8), bs):
        x = T.normalize(np.asarray(x_u8[i:i + bs])).contiguous(memory_format=torch.channels_last)
        out.append(body(x).mean((2, 3)).double().numpy())
    return np.concatenate(out)


def fit(f, y, k, dim):
    """Class means and a whitening matrix W [d, dim] of the shrunk tied covariance."""
    means = np.stack([f[y == c].mean(0) if np.any(y == c) else f.mean(0) for c in range(k)])
    r = f - means[y]
    s = r.T @ r / len(f)
    d = s.shape[0]
    s = (1 - SHRINK) * s + SHRINK * np.trace(s) / d * np.eye(d)
    ev, evec = np.linalg.eigh(s)                 # ascending
    keep = np.argsort(ev)[::-1][:dim]
    w = evec[:, keep] / np.sqrt(ev[keep])
    return means, w


def score(f, means, w):
    g = f @ w
    mw = means @ w
    d = ((g[:, None, :] - mw[None, :, :]) ** 2).sum(-1)
    return d.min(1) / w.shape[1]


def auroc(pos, neg):
    """P(score of a negative > score of a positive), ties count half."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (neg[:, None] > pos[None, :]).sum() + 0.5 * (neg[:, None] == pos[None, :]).sum()
    return float(gt) / (len(pos) * len(neg))


def holdout_threshold(f, y, lesions, k, dim):
    """Fit on 9/10 of the train lesions, threshold = percentile of the rest."""
    uniq = np.array(sorted(set(lesions)))
    rs = np.random.RandomState(T.SEED)
    held = set(uniq[rs.permutation(len(uniq))[:len(uniq) // 10]])
    h = np.array([l in held for l in lesions])
    means, w = fit(f[~h], y[~h], k, dim)
    return float(np.percentile(score(f[h], means, w), HOLDOUT_PCT)), int(h.sum())


def block_output(g, layer):
    """The tensor torch.onnx.export produced for model.features[layer]'s
    output: the output of the last node named /features/features.LAYER/..."""
    prefix = "/features/features.%d/" % layer
    nodes = [n for n in g.node if n.name.startswith(prefix)]
    assert nodes, "no node named %s* in the graph" % prefix
    return nodes[-1].output[0]


def add_to_onnx(path_in, path_out, layer, means, w, threshold, facts):
    import onnx
    from onnx import helper, numpy_helper
    m = onnx.load(path_in)
    g = m.graph
    assert len(g.output) == 1, "the model already has %d outputs" % len(g.output)
    src = block_output(g, layer)
    dim = w.shape[1]
    inits = {
        "ood/whiten": w.astype(np.float32),
        "ood/means": (means @ w).astype(np.float32),
        "ood/inv_dim": np.array([1.0 / dim], np.float32),
    }
    for name, arr in inits.items():
        g.initializer.append(numpy_helper.from_array(arr, name))
    g.node.extend([
        helper.make_node("GlobalAveragePool", [src], ["ood/pool"], name="ood/GlobalAveragePool"),
        helper.make_node("Flatten", ["ood/pool"], ["ood/feat"], name="ood/Flatten"),
        helper.make_node("Gemm", ["ood/feat", "ood/whiten"], ["ood/z"], name="ood/Gemm"),
        helper.make_node("Sub", ["ood/z", "ood/means"], ["ood/diff"], name="ood/Sub"),
        helper.make_node("ReduceSumSquare", ["ood/diff"], ["ood/dist"], axes=[1], keepdims=0,
                         name="ood/ReduceSumSquare"),
        helper.make_node("ReduceMin", ["ood/dist"], ["ood/min"], axes=[0], keepdims=1,
                         name="ood/ReduceMin"),
        helper.make_node("Mul", ["ood/min", "ood/inv_dim"], ["ood_score"], name="ood/Mul"),
    ])
    g.output.append(helper.make_tensor_value_info("ood_score", onnx.TensorProto.FLOAT, [1]))
    meta = {p.key: p.value for p in m.metadata_props}
    meta.update({"ood_output": "ood_score", "ood_threshold": "%.6g" % threshold})
    meta.update(facts)
    del m.metadata_props[:]
    for k2, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k2, v
    onnx.checker.check_model(m)
    onnx.save(m, path_out)


def main():
    T.keep_buffers_in_heap()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "dermal-ham10000.onnx"),
                    help="exported by tools/train.py, without an OOD output yet")
    ap.add_argument("--ckpt", default=os.path.join(ROOT, "build", "train", "best.pt"))
    ap.add_argument("--data", default=os.path.normpath(os.path.join(ROOT, "..", "shared", "data")))
    ap.add_argument("--cache", default=os.path.join(ROOT, "build", "train-cache"))
    ap.add_argument("--layer", type=int, default=13, help="MobileNetV2 block whose output is pooled")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--out", default=None, help="default: --model (in place)")
    ap.add_argument("--limit", type=int, default=0, help="smoke run: every Nth train image")
    ap.add_argument("--measure-only", action="store_true",
                    help="print AUROC/rejection for several DIM values, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))

    model = T.build_model()
    model.load_state_dict(torch.load(args.ckpt)["model"])
    model = model.to(memory_format=torch.channels_last)
    ham = os.path.join(args.data, "ham10000")
    rows = T.read_split(ham)
    xtr = T.load_cached(ham, "train", rows["train"], args.cache)
    xva = T.load_cached(ham, "val", rows["val"], args.cache)
    ytr = np.array([r[1] for r in rows["train"]])
    lesions = [r[2] for r in rows["train"]]
    if args.limit:
        sub = np.arange(0, len(ytr), args.limit)
        xtr, ytr, lesions = xtr[sub], ytr[sub], [lesions[i] for i in sub]
    xneg, neg_names = load_negatives(negative_paths(args.data))
    T.log("features: %d train, %d val, %d negatives" % (len(xtr), len(xva), len(xneg)))
    k = len(T.CLASSES)
    if args.measure_only:
        grid = [(6, 16), (6, 32), (13, 16), (13, 32), (13, 64), (17, 128), (17, 256),
                (18, 256), (18, 1280)]
    else:
        grid = [(args.layer, args.dim)]
    feats = {}
    for layer, dim in grid:
        if layer not in feats:
            feats[layer] = [features(model, x, layer) for x in (xtr, xva, xneg)]
        ftr, fva, fneg = feats[layer]
        dim = min(dim, ftr.shape[1])
        thr, n_held = holdout_threshold(ftr, ytr, lesions, k, dim)
        means, w = fit(ftr, ytr, k, dim)
        sva, sneg = score(fva, means, w), score(fneg, means, w)
        au = auroc(sva, sneg)
        rej = float((sva > thr).mean())
        acc_neg = int((sneg <= thr).sum())
        T.log("block %2d (%4d ch) dim %4d: AUROC %.4f, threshold %.3f (p%.0f of %d held-out "
              "train images), val rejected %.2f%%, negatives accepted %d/%d" % (
                  layer, ftr.shape[1], dim, au, thr, HOLDOUT_PCT, n_held, 100 * rej, acc_neg,
                  len(sneg)))
    if args.measure_only:
        order = np.argsort(sneg)
        T.log("lowest-scoring negatives: " + ", ".join(
            "%s %.2f" % (neg_names[i], sneg[i]) for i in order[:8]))
        return
    facts = {
        "ood_method": ("min over classes of the squared Mahalanobis distance / %d of the "
                       "channel means of MobileNetV2 block %d's output (%d channels) to the "
                       "class means, tied covariance shrunk by %.2f, top %d principal "
                       "directions; fitted on %d train images; threshold = p%.0f of "
                       "held-out train lesions"
                       % (dim, args.layer, ftr.shape[1], SHRINK, dim, len(ftr), HOLDOUT_PCT)),
        "ood_val_rejected": "%.4f" % rej,
        "ood_auroc": "%.4f" % au,
        "ood_negatives": "%d images: python3-skimage sample data + imagenet-mobilenet test images" % len(sneg),
    }
    out = args.out or args.model
    add_to_onnx(args.model, out, args.layer, means, w, thr, facts)
    T.log("wrote %s: ood_threshold %.4f, AUROC %.4f, val rejected %.2f%%" % (out, thr, au, 100 * rej))
    # the C engine must compute the same score
    exe = os.path.join(ROOT, "build", "dermal")
    if os.access(exe, os.X_OK):
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            xi, yo = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
            np.save(xi, T.normalize(np.asarray(xva[:1])).numpy().astype(np.float32))
            r = subprocess.run([exe, "run", out, "--input", xi, "--output", yo, "--output-index", "1"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                got = float(np.load(yo).ravel()[0])
                T.log("ood_score of val[0]: dermal %.5f, numpy %.5f" % (got, sva[0]))
                assert abs(got - sva[0]) <= 1e-3 * max(1.0, abs(sva[0])), "dermal disagrees"
            else:
                T.log("build/dermal run: %s" % r.stderr.strip()[-300:])


if __name__ == "__main__":
    main()
