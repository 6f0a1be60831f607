#!/usr/bin/python3
"""PyTorch anchor for bench/gradcam_bench.sh: the cost pytorch-grad-cam pays.

usage: torch_gradcam_bench.py (--arch NAME | --default-model ONNX) [--iters N]
       [--threads N]
Times, interleaved, a plain forward pass and a Grad-CAM pass done the way
pytorch-grad-cam does it (forward with an activation hook, backward of the
class score through the whole network, weights = mean gradient, weighted sum,
ReLU), and prints one JSON line: p50 of each and their ratio."""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch")
    ap.add_argument("--default-model")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch
    import gradcam_reference as gr
    torch.set_num_threads(a.threads)
    if a.default_model:
        model, target = gr.default_model(a.default_model), "features"
    else:
        import export_torchvision as ex
        model, target = ex.build_model(a.arch), gr.TARGETS[a.arch]
    mod = model.get_submodule(target)
    store = {}
    mod.register_forward_hook(lambda m, i, o: store.__setitem__("act", o))
    x = torch.randn(1, 3, 224, 224)
    plain, cam = [], []
    for i in range(a.iters + 5):
        t0 = time.perf_counter()
        with torch.no_grad():
            model(x)
        t1 = time.perf_counter()
        with torch.enable_grad():
            y = model(x)
            act = store["act"]
            g, = torch.autograd.grad(y[0, int(y.argmax())], act)
            w = g.mean(dim=(2, 3), keepdim=True)
            torch.relu((w * act).sum(1))
        t2 = time.perf_counter()
        if i >= 5:
            plain.append((t1 - t0) * 1e3)
            cam.append((t2 - t1) * 1e3)
    p0, p1 = float(np.median(plain)), float(np.median(cam))
    print(json.dumps({"runtime": "pytorch", "model": a.arch or a.default_model,
                      "threads": a.threads, "p50_ms": round(p0, 3),
                      "cam_p50_ms": round(p1, 3), "cam_ratio": round(p1 / p0, 3)}))


if __name__ == "__main__":
    main()
