"""Compares two float .npy tensors: max|a-b| <= tol * max|ref|.

usage: compare.py GOT.npy REF.npy [--tol 1e-4] [--label TEXT]
Prints one line `ok|FAIL label: max_abs_diff=... max_ref=... ratio=...` and
exits 0 when within tolerance, 1 otherwise (shape mismatch too)."""
import argparse
import sys

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("got")
ap.add_argument("ref")
ap.add_argument("--tol", type=float, default=1e-4)
ap.add_argument("--label", default="")
a = ap.parse_args()
got = np.load(a.got).astype(np.float64)
ref = np.load(a.ref).astype(np.float64)
label = a.label or a.got
if got.size != ref.size:
    print(f"FAIL {label}: shape {got.shape} vs {ref.shape}")
    sys.exit(1)
got = got.reshape(ref.shape)
diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
scale = float(np.max(np.abs(ref))) if ref.size else 0.0
ratio = diff / scale if scale > 0 else diff
ok = np.isfinite(got).all() and ratio <= a.tol
print(f"{'ok' if ok else 'FAIL'} {label}: max_abs_diff={diff:.3g} "
      f"max_ref={scale:.3g} ratio={ratio:.3g} (tol {a.tol:g})")
sys.exit(0 if ok else 1)
