#!/usr/bin/python3
"""Layer by layer: dermal's steps next to ONNX Runtime's nodes (--threads N).

    /usr/bin/python3 bench/layer_compare.py MODEL.onnx [--threads N] [--iters N]
                                            [--depth N]

Runs `dermal bench` with DERMAL_ONEDNN_PROFILE=1 (each step's mean time)
and bench/ort_profile.js (each node's median kernel time), then groups
both by layer and prints the two times and their ratio.  A layer is named
from the node's path the way torchvision's exports name them
(`features.N` and, inside a block, `conv.M`: f2.0 is block 2's first
conv); other names group by their first path element.  Both runtimes fuse
differently (dermal's tiles run an expand conv inside the next step; ORT
folds activations into convs), so compare blocks, not single rows, where
one side shows 0.  --depth N groups the other names by their first N path
elements instead (3 gives ResNet's single convs: layer1/layer1.0/conv1).
Run the two at once only on a quiet machine: they take
turns, but a slow phase between them moves the ratio.
"""
import argparse
import collections
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def layer(name, depth=1):
    m = re.search(r"features\.(\d+)/(?:features\.\d+\.\d+|conv/conv\.(\d+))", name)
    if m:
        return "f%s.%s" % (m.group(1), m.group(2) or "0")
    name = re.sub(r"_token_\d+$", "", name)  # ORT's names for fused QDQ nodes
    parts = [p for p in name.split("/") if p]
    return "/".join(parts[:depth]) if parts else name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--dermal", default=os.path.join(ROOT, "build", "dermal"))
    a = ap.parse_args()
    env = dict(os.environ, DERMAL_ONEDNN_PROFILE="1")
    d = subprocess.run([a.dermal, "bench", a.model, "--threads", str(a.threads),
                        "--iters", str(a.iters)], env=env, capture_output=True, text=True)
    if d.returncode != 0:
        sys.exit("dermal bench failed: " + d.stderr.strip()[-300:])
    o = subprocess.run(["node", os.path.join(HERE, "ort_profile.js"), os.path.abspath(a.model),
                        "--threads", str(a.threads), "--iters", str(a.iters)],
                       capture_output=True, text=True, cwd=HERE)
    if o.returncode != 0:
        sys.exit("ort_profile.js failed: " + o.stderr.strip()[-300:])
    dt = collections.OrderedDict()
    total_d = 0.0
    for line in d.stderr.splitlines():
        m = re.match(r"profile:\s+\d+\s+(\S+)\s+(.*?)\s+([0-9.]+) ms$", line)
        if not m:
            continue
        ms = float(m.group(3))
        total_d += ms
        k = layer(m.group(2), a.depth)
        dt[k] = dt.get(k, 0.0) + ms
    ot = collections.OrderedDict()
    total_o = 0.0
    for line in o.stdout.splitlines():
        name, us = line.rsplit("\t", 1)
        ms = float(us) / 1000.0
        total_o += ms
        k = layer(name, a.depth)
        ot[k] = ot.get(k, 0.0) + ms
    print("%-24s %9s %9s %6s" % ("layer", "dermal ms", "ORT ms", "ratio"))
    for k in list(dt) + [k for k in ot if k not in dt]:
        x, y = dt.get(k), ot.get(k)
        r = "%6.2f" % (x / y) if x is not None and y else "     -"
        print("%-24s %9s %9s %s" % (k, "%.3f" % x if x is not None else "-",
                                     "%.3f" % y if y is not None else "-", r))
    print("%-24s %9.3f %9.3f %6.2f" % ("total", total_d, total_o, total_d / total_o))


if __name__ == "__main__":
    main()
