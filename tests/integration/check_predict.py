"""Checks `dermal predict --json` and `dermal eval --json` (see
test_predict.sh).  usage: check_predict.py MODE DIR [files...]
  probs DIR PRED.jsonl OUTDIR  : writes, per image, the tensor PIL+numpy
                                 preprocessing gives (direct resize 32x32
                                 bilinear, (x/255-0.5)/0.5) as OUTDIR/NAME.npy
  compare PRED.jsonl OUTDIR    : compares predict's probabilities with
                                 softmax(OUTDIR/NAME.out.npy)
  eval PRED.jsonl EVAL.json LABELS.csv : recomputes the metrics from the
                                 per-image predictions and compares."""
import csv
import json
import sys

import numpy as np
from PIL import Image

mode = sys.argv[1]
fails = 0


def fail(msg):
    global fails
    fails += 1
    print("FAIL", msg)


if mode == "probs":
    d, outdir = sys.argv[2], sys.argv[3]
    import glob
    import os
    for p in sorted(glob.glob(os.path.join(d, "img*"))):
        im = Image.open(p).convert("RGB").resize((32, 32), Image.BILINEAR)
        x = (np.asarray(im, dtype=np.float32) / 255.0 - 0.5) / 0.5
        x = x.transpose(2, 0, 1)[None].copy()
        name = os.path.splitext(os.path.basename(p))[0]
        np.save(os.path.join(outdir, name + ".npy"), x)
elif mode == "compare":
    import os
    outdir = sys.argv[3]
    n = 0
    for line in open(sys.argv[2]):
        r = json.loads(line)
        if "error" in r:
            continue
        name = os.path.splitext(os.path.basename(r["image"]))[0]
        y = np.load(os.path.join(outdir, name + ".out.npy")).reshape(-1).astype(np.float64)
        e = np.exp(y - y.max())
        e /= e.sum()
        got = np.array([r["probabilities"][k] for k in
                        "akiec bcc bkl df mel nv vasc".split()])
        if abs(got.sum() - 1) > 1e-4:
            fail(f"{name}: probabilities sum to {got.sum()}")
        # PNG pixels are exact, so only float rounding remains; JPEG decoders
        # may differ by a level or two on these noise images (upsampling).
        tol = 1e-4 if r["image"].endswith(".png") else 1e-2
        if np.abs(got - e).max() > tol:
            fail(f"{name}: probabilities differ from PIL+numpy preprocessing: "
                 f"{np.abs(got - e).max():.4g} > {tol}")
        top = [t["probability"] for t in r["top"]]
        if top != sorted(top, reverse=True) or r["top"][0]["label"] != r["label"]:
            fail(f"{name}: top not sorted or label mismatch")
        if set(r["ms"]) != {"decode", "preprocess", "inference"}:
            fail(f"{name}: ms keys {sorted(r['ms'])}")
        n += 1
    print(f"compared {n} images")
    if n < 20:
        fail("too few images compared")
elif mode == "eval":
    preds = {}
    import os
    for line in open(sys.argv[2]):
        r = json.loads(line)
        if "error" not in r:
            preds[os.path.splitext(os.path.basename(r["image"]))[0]] = r["label"]
    ev = json.loads(open(sys.argv[3]).read())
    labels = ev["labels"]
    conf = np.zeros((7, 7), int)
    for row in csv.DictReader(open(sys.argv[4])):
        if row["image_id"] in preds and row["dx"] in labels:
            conf[labels.index(row["dx"]), labels.index(preds[row["image_id"]])] += 1
    if conf.tolist() != ev["confusion"]:
        fail(f"confusion {ev['confusion']} != {conf.tolist()}")
    acc = np.trace(conf) / conf.sum()
    rec = [conf[i, i] / conf[i].sum() for i in range(7) if conf[i].sum()]
    if abs(acc - ev["accuracy"]) > 1e-6 or abs(np.mean(rec) - ev["balanced_accuracy"]) > 1e-6:
        fail(f"accuracy {ev['accuracy']} vs {acc}, balanced {ev['balanced_accuracy']} vs {np.mean(rec)}")
    if ev["skipped"] != 2 or ev["unknown_labels"] != 1:
        fail(f"skipped {ev['skipped']} (want 2: broken + missing), unknown {ev['unknown_labels']}")
    for k in ["precision", "recall", "f1", "support"]:
        if k not in ev["per_class"]["nv"]:
            fail("per_class lacks " + k)
    if not 0 <= ev["ece"] <= 1:
        fail("ece out of range")
print(f"check_predict {mode}: {'ok' if not fails else 'FAIL'}")
sys.exit(1 if fails else 0)
