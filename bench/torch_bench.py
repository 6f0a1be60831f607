#!/usr/bin/python3
"""PyTorch (CPU, eager) latency benchmark, the same network as the ONNX export.

    /usr/bin/python3 bench/torch_bench.py MODEL [--threads N] [--iters N] [--warmup N]

MODEL is a torchvision name (mobilenet_v2) or a path to an exported file
(build/models/mobilenet_v2.opset13.onnx): the name is taken from the file name,
and the model is rebuilt with tools/export_torchvision.py's build_model(), i.e.
the same seeded weights and randomised BatchNorms as the exported ONNX.

Prints one JSON line:
  {"runtime":"pytorch","model":...,"threads":N,"load_ms":...,"first_ms":...,
   "p50_ms":...,"p90_ms":...,"p99_ms":...}
load_ms: building the model (constructor + weight init + eval); first_ms: the
first forward; then --warmup untimed and --iters timed forwards, each timed
alone, under torch.inference_mode() with torch.set_num_threads(N).
"""

import argparse
import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))


def percentile(sorted_samples, p):
    if not sorted_samples:
        return float("nan")
    r = (p / 100.0) * (len(sorted_samples) - 1)
    lo = int(r)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (r - lo)


def loaded_blas():
    """Which BLAS the process mapped: Debian's default libblas3 is the netlib
    reference implementation, which makes single-threaded PyTorch slow (1x1
    convolutions go through BLAS at one thread)."""
    try:
        libs = set()
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1] if len(line.split()) >= 6 else ""
                b = os.path.basename(p)
                if b.startswith(("libblas", "libopenblas", "libmkl_rt", "libblis")):
                    libs.add(os.path.realpath(p))
    except OSError:
        return None
    if not libs:
        return None
    if any("openblas" in l for l in libs):
        return "openblas"
    if any("mkl" in l for l in libs):
        return "mkl"
    if any("blis" in l for l in libs):
        return "blis"
    if any("/blas/" in l for l in libs):
        return "reference"
    return ",".join(sorted(libs))


def model_name(arg):
    base = os.path.basename(arg)
    return base.split(".")[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch CPU latency benchmark")
    ap.add_argument("model", help="torchvision name or path to NAME.opsetN.onnx")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="same base seed as the export (default 0)")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.iters < 1 or args.warmup < 0:
        ap.error("--threads/--iters must be >= 1, --warmup >= 0")

    import torch
    import export_torchvision as ex

    name = model_name(args.model)
    if name not in ex.ALL_MODELS:
        ap.error("unknown model %r (known: %s)" % (name, ", ".join(ex.ALL_MODELS)))

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    t0 = time.perf_counter()
    model = ex.build_model(name, args.seed)
    load_ms = (time.perf_counter() - t0) * 1e3

    x = torch.from_numpy(ex.make_input(name, args.seed))
    with torch.inference_mode():
        t = time.perf_counter()
        model(x)
        first_ms = (time.perf_counter() - t) * 1e3
        for _ in range(args.warmup):
            model(x)
        samples = []
        for _ in range(args.iters):
            t = time.perf_counter()
            model(x)
            samples.append((time.perf_counter() - t) * 1e3)
    samples.sort()
    r3 = lambda v: round(v, 3)
    print(json.dumps({
        "runtime": "pytorch",
        "version": torch.__version__,
        "blas": loaded_blas(),
        "model": name,
        "threads": args.threads,
        "iters": args.iters,
        "load_ms": r3(load_ms),
        "first_ms": r3(first_ms),
        "p50_ms": r3(percentile(samples, 50)),
        "p90_ms": r3(percentile(samples, 90)),
        "p99_ms": r3(percentile(samples, 99)),
        "peak_rss_mb": r3(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
