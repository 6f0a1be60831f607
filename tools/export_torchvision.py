#!/usr/bin/python3
"""Export torchvision classifiers (random, seeded weights) to ONNX for dermal's tests.

Usage:
    /usr/bin/python3 tools/export_torchvision.py --out build/models [--opset 13|17]
        [--models resnet18,mobilenet_v2,...] [--all] [--seed N] [--force]

For each model NAME this writes, into --out:
    NAME.opset<N>.onnx      the ONNX graph (batch 1, input "input" 1x3x224x224,
                            output "logits"), exported in eval mode with
                            do_constant_folding=True
    NAME.input.npy          float32 input, seeded standard normal (shared
                            across opsets)
    NAME.opset<N>.torch.npy PyTorch's float32 output for that input

No pretrained weights are downloaded (weights=None).  Every model is built with
a per-model deterministic seed, and every BatchNorm gets randomised running
statistics and affine parameters so that the activations neither vanish nor
collapse to the same value for every class: the script prints the logits' std,
which should be well above 1e-3.

Files that already exist are reused (cache) unless --force is given.

bench/torch_bench.py imports build_model() / make_input() from this file so
that the benchmark runs exactly the network that was exported.

Needs Debian's python3-torch, python3-torchvision, python3-onnx, python3-numpy:
run with /usr/bin/python3.
"""

import argparse
import os
import sys
import time
import warnings
import zlib

import numpy as np

# The five CI architectures plus resnet50 (used by bench/compare.sh).
DEFAULT_MODELS = [
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "squeezenet1_1",
    "resnet50",
]

ALL_MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "densenet121",
    "squeezenet1_1",
    "shufflenet_v2_x1_0",
    "mnasnet1_0",
    "regnet_y_400mf",
    "googlenet",
    "vgg11_bn",
]

INPUT_SHAPE = (1, 3, 224, 224)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def model_seed(name, seed=0):
    """Deterministic per-model seed (independent of the model's position in the list)."""
    return (zlib.crc32(name.encode("ascii")) + int(seed)) % (2**31 - 1)


def _constructor(name):
    import torchvision.models as tvm

    if name not in ALL_MODELS:
        raise ValueError("unknown model %r (known: %s)" % (name, ", ".join(ALL_MODELS)))
    fn = getattr(tvm, name)
    if name == "googlenet":
        # init_weights=True avoids torchvision's FutureWarning about the default;
        # aux_logits=False and transform_input=False keep the graph a plain classifier.
        return lambda: fn(weights=None, aux_logits=False, init_weights=True,
                          transform_input=False)
    return lambda: fn(weights=None)


def build_model(name, seed=0):
    """Build torchvision model NAME with seeded random weights and randomised
    BatchNorm statistics, in eval mode."""
    import torch
    import torch.nn as nn

    s = model_seed(name, seed)
    torch.manual_seed(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _constructor(name)()
    g = torch.Generator().manual_seed(s + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                if m.track_running_stats and m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    model.eval()
    return model


def make_input(name, seed=0):
    """Seeded standard-normal float32 input of shape 1x3x224x224."""
    rng = np.random.RandomState(model_seed(name, seed) ^ 0x5EED)
    return rng.standard_normal(INPUT_SHAPE).astype(np.float32)


def paths(out, name, opset):
    return (
        os.path.join(out, "%s.opset%d.onnx" % (name, opset)),
        os.path.join(out, "%s.input.npy" % name),
        os.path.join(out, "%s.opset%d.torch.npy" % (name, opset)),
    )


def _atomic_save_npy(path, arr):
    tmp = path + ".tmp.npy"
    np.save(tmp, arr)
    os.replace(tmp, path)


def export_one(name, out, opset, seed=0, force=False, check=True):
    import torch

    onnx_path, input_path, torch_path = paths(out, name, opset)
    if not force and all(os.path.exists(p) for p in (onnx_path, input_path, torch_path)):
        log("[%s] opset %d: cached (%s)" % (name, opset, onnx_path))
        return {"name": name, "cached": True}

    t0 = time.time()
    model = build_model(name, seed)
    if os.path.exists(input_path) and not force:
        x_np = np.load(input_path)
        if x_np.shape != INPUT_SHAPE or x_np.dtype != np.float32:
            raise RuntimeError("%s: unexpected shape/dtype %s %s" % (input_path, x_np.shape, x_np.dtype))
    else:
        x_np = make_input(name, seed)
        _atomic_save_npy(input_path, x_np)
    x = torch.from_numpy(x_np)

    with torch.inference_mode():
        y = model(x)
    y_np = y.detach().numpy().astype(np.float32)
    std = float(y_np.std())
    status = "ok" if std > 1e-3 else "TOO SMALL (activations vanish)"
    log("[%s] logits shape %s std %.4g max|y| %.4g  %s"
        % (name, tuple(y_np.shape), std, float(np.abs(y_np).max()), status))

    tmp_onnx = onnx_path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                model,
                (x,),
                tmp_onnx,
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                input_names=["input"],
                output_names=["logits"],
                training=torch.onnx.TrainingMode.EVAL,
            )
    if check:
        import onnx

        onnx.checker.check_model(tmp_onnx)
    os.replace(tmp_onnx, onnx_path)
    _atomic_save_npy(torch_path, y_np)
    dt = time.time() - t0
    log("[%s] opset %d: wrote %s (%.1f MB) in %.1f s"
        % (name, opset, onnx_path, os.path.getsize(onnx_path) / 1e6, dt))
    return {"name": name, "cached": False, "seconds": dt, "std": std}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--opset", type=int, default=13, choices=[13, 17])
    ap.add_argument("--models", default=None,
                    help="comma-separated list (default: %s)" % ",".join(DEFAULT_MODELS))
    ap.add_argument("--all", action="store_true", help="export all %d models" % len(ALL_MODELS))
    ap.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    ap.add_argument("--force", action="store_true", help="re-export even if files exist")
    ap.add_argument("--no-check", action="store_true", help="skip onnx.checker")
    args = ap.parse_args(argv)

    if args.all:
        names = list(ALL_MODELS)
    elif args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    else:
        names = list(DEFAULT_MODELS)
    bad = [n for n in names if n not in ALL_MODELS]
    if bad:
        ap.error("unknown model(s): %s (known: %s)" % (", ".join(bad), ", ".join(ALL_MODELS)))

    os.makedirs(args.out, exist_ok=True)
    import torch

    log("torch %s, opset %d, out %s, models: %s"
        % (torch.__version__, args.opset, args.out, ", ".join(names)))
    t0 = time.time()
    failed = []
    for i, name in enumerate(names):
        log("(%d/%d) %s" % (i + 1, len(names), name))
        try:
            r = export_one(name, args.out, args.opset, args.seed, args.force, not args.no_check)
            if not r["cached"] and r["std"] <= 1e-3:
                failed.append(name)
        except Exception as e:  # keep going, report at the end
            log("[%s] FAILED: %s: %s" % (name, type(e).__name__, e))
            failed.append(name)
    log("done in %.1f s%s" % (time.time() - t0, ("; failed: " + ", ".join(failed)) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
