#!/usr/bin/python3
"""Parity of dermal's image pipeline (src/image/) with PIL and torchvision.

Run by tests/integration/test_image_parity.sh with /usr/bin/python3 (PIL,
numpy, torch, torchvision from Debian).  Three parts:

 (a) generates a sample set with PIL into a temp dir: baseline JPEGs (4:2:0,
     4:2:2, 4:4:4), progressive, grayscale and CMYK JPEG, EXIF-rotated JPEGs
     (orientations 2..8, both TIFF byte orders), PNGs (RGB, 8-bit gray,
     1-bit, palette with transparency, RGBA, gray+alpha, 16-bit RGB, 16-bit
     RGBA, 16-bit gray, EXIF eXIf chunk), WebP (lossy, lossless, alpha,
     EXIF), and, when cjpeg is installed, JPEGs with unusual subsampling;
 (b) compares dermal's decoded pixels (image_dump rgb) with PIL's
     ImageOps.exif_transpose(im).convert("RGB"): JPEG within a few levels,
     PNG and WebP exact;
 (c) on ../shared/data/ham10000-fullres/images (skipped, saying so, when
     absent) compares dermal's tensor (image_dump tensor 256 224: shorter
     side 256, center crop 224, scale 1/255, no mean/std) with torchvision's
     Resize(256) + CenterCrop(224) + ToTensor(): |diff| <= 1/255 on >= 99.9 %
     of the elements of every image.  Plus Pillow-resize checks of
     dm_image_resize at other sizes (down and up) and an informational check
     of the DCT-scaled JPEG path.

Prints one line per check and ends with
`test_image_parity: N passed, N failed, N skipped`.

`image_parity.py --seeds DIR` instead writes the tiny generated seed corpus
of the libFuzzer target tests/fuzz/fuzz_image.c.
"""
import argparse
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image, ImageOps

TOL_JPEG_MAX = 3       # JPEG decoders may differ by a few levels
TOL_JPEG_MEAN = 0.5
TENSOR_TOL = 1.0 / 255 + 1e-6
TENSOR_FRAC = 0.999

counts = {"passed": 0, "failed": 0, "skipped": 0}


def report(ok, name, detail=""):
    counts["passed" if ok else "failed"] += 1
    print(("ok     " if ok else "FAIL   ") + name + ("  " + detail if detail else ""))
    sys.stdout.flush()


def skip(name, why):
    counts["skipped"] += 1
    print("skip   %s  (%s)" % (name, why))


# ---------------------------------------------------------------- samples

def base_rgb(w, h, seed=0):
    """Smooth gradients, a few hard edges and mild noise: exercises both the
    JPEG colour path and the resampling filter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    img = np.stack([r, g, b], -1)
    img[(x // 40 + y // 40) % 2 == 0] *= 0.6          # checkerboard edges
    img[h // 3:h // 3 + 5, :, :] = [250, 10, 10]      # thin red bar
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_chunk(tag, data):
    return (struct.pack(">I", len(data)) + tag + data +
            struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff))


def png16(arr, color_type):
    """Writes a 16-bit PNG by hand (PIL cannot save 16-bit RGB/RGBA)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(raw, 6)) + png_chunk(b"IEND", b""))


def exif_bytes(orientation, big_endian=False):
    """A minimal EXIF block (TIFF header + IFD0 with one SHORT entry)."""
    e = ">" if big_endian else "<"
    tiff = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(e + "I", 8)
    ifd = struct.pack(e + "H", 1) + struct.pack(e + "HHI", 0x0112, 3, 1)
    ifd += struct.pack(e + "H", orientation) + b"\x00\x00" + struct.pack(e + "I", 0)
    return b"Exif\x00\x00" + tiff + ifd


def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def make_samples(w=301, h=203):
    """name -> (bytes, kind) with kind in {jpeg, exact, gray16}."""
    rgb = Image.fromarray(base_rgb(w, h))
    gray = rgb.convert("L")
    s = {}
    s["baseline420.jpg"] = (save(rgb, "JPEG", quality=90), "jpeg")
    s["baseline422.jpg"] = (save(rgb, "JPEG", quality=90, subsampling=1), "jpeg")
    s["baseline444.jpg"] = (save(rgb, "JPEG", quality=95, subsampling=0), "jpeg")
    s["progressive.jpg"] = (save(rgb, "JPEG", quality=85, progressive=True), "jpeg")
    s["gray.jpg"] = (save(gray, "JPEG", quality=90), "jpeg")
    s["cmyk.jpg"] = (save(rgb.convert("CMYK"), "JPEG", quality=95), "jpeg")
    for o in range(2, 9):
        s["exif%d.jpg" % o] = (save(rgb, "JPEG", quality=90, exif=exif_bytes(o)), "jpeg")
    for o in (6, 8):
        s["exif%d_mm.jpg" % o] = (
            save(rgb, "JPEG", quality=90, exif=exif_bytes(o, True)), "jpeg")
    s["exif6_progressive.jpg"] = (
        save(rgb, "JPEG", quality=90, progressive=True, exif=exif_bytes(6)), "jpeg")
    s["rgb.png"] = (save(rgb, "PNG"), "exact")
    s["gray.png"] = (save(gray, "PNG"), "exact")
    s["bw1.png"] = (save(gray.point(lambda v: 255 if v > 128 else 0).convert("1"),
                         "PNG"), "exact")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=200)
    s["palette.png"] = (save(pal, "PNG", transparency=3), "exact")
    pal16 = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    s["palette4bit.png"] = (save(pal16, "PNG", bits=4), "exact")
    a = np.array(rgb)
    alpha = (np.arange(w)[None, :] * 255 // (w - 1) * np.ones((h, 1))).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([a, alpha]), "RGBA")
    s["rgba.png"] = (save(rgba, "PNG"), "exact")
    s["la.png"] = (save(Image.merge("LA", (gray, Image.fromarray(alpha))), "PNG"), "exact")
    a16 = a.astype(np.uint16) * 257 + np.arange(w, dtype=np.uint16)[None, :, None] % 200
    s["rgb16.png"] = (png16(a16, 2), "exact")
    s["rgba16.png"] = (png16(np.dstack([a16, alpha.astype(np.uint16) * 257]), 6), "exact")
    g16 = np.array(gray).astype(np.uint16) * 257
    s["gray16.png"] = (save(Image.fromarray(g16.astype(np.uint16), "I;16"), "PNG"),
                       "gray16")
    s["exif6.png"] = (save(rgb, "PNG", exif=exif_bytes(6)), "exact")
    s["lossy.webp"] = (save(rgb, "WEBP", quality=80), "webp")
    s["lossless.webp"] = (save(rgb, "WEBP", lossless=True), "exact")
    s["alpha.webp"] = (save(rgba, "WEBP", lossless=True, exact=True), "exact")
    s["exif8.webp"] = (save(rgb, "WEBP", lossless=True, exif=exif_bytes(8)), "exact")
    # Chroma subsampling that TurboJPEG 2.x's header call cannot name (3x1,
    # 2x2/2x1/1x1): dermal falls back to its own SOF parse.  PIL cannot write
    # these; cjpeg (libjpeg-turbo-progs) can, when installed.
    for samp in ("3x1", "2x2,2x1,1x1"):
        name = "sampling_%s.jpg" % samp.replace(",", "_")
        if shutil.which("cjpeg"):
            p = subprocess.run(["cjpeg", "-sample", samp, "-quality", "90"],
                               input=save(rgb, "PPM"), capture_output=True)
            s[name] = (p.stdout, "jpeg") if p.returncode == 0 else (None, "cjpeg failed")
        else:
            s[name] = (None, "cjpeg (libjpeg-turbo-progs) not installed")
    return s


def write_seeds(d):
    """Tiny fuzz seeds (< 10 KB each), all generated."""
    os.makedirs(d, exist_ok=True)
    rgb = Image.fromarray(base_rgb(24, 16, seed=1))
    seeds = {
        "baseline.jpg": save(rgb, "JPEG", quality=70),
        "progressive.jpg": save(rgb, "JPEG", quality=70, progressive=True),
        "gray.jpg": save(rgb.convert("L"), "JPEG", quality=70),
        "cmyk.jpg": save(rgb.convert("CMYK"), "JPEG", quality=70),
        "exif6.jpg": save(rgb, "JPEG", quality=70, exif=exif_bytes(6, True)),
        "rgb.png": save(rgb, "PNG"),
        "palette.png": save(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8),
                            "PNG", transparency=1),
        "rgba16.png": png16(np.dstack([np.array(rgb).astype(np.uint16) * 257,
                                       np.full((16, 24), 40000, np.uint16)]), 6),
        "exif3.png": save(rgb, "PNG", exif=exif_bytes(3)),
        "lossy.webp": save(rgb, "WEBP", quality=60),
        "lossless_exif.webp": save(rgb.convert("RGBA"), "WEBP", lossless=True,
                                   exif=exif_bytes(8)),
    }
    for name, data in seeds.items():
        assert len(data) < 10240, name
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), d))


# ------------------------------------------------------------- the C side

def run_dump(dump, args):
    p = subprocess.run([dump] + args, capture_output=True, text=True)
    return p.returncode, p.stderr.strip()


def dm_rgb(dump, path, tmp, target=0):
    out = os.path.join(tmp, "out_rgb.npy")
    rc, err = run_dump(dump, ["rgb", path, out, str(target)])
    if rc != 0:
        raise RuntimeError("image_dump rgb %s: exit %d: %s" % (path, rc, err))
    return np.load(out), err


def dm_tensor(dump, path, tmp, resize=256, crop=224):
    out = os.path.join(tmp, "out_tensor.npy")
    rc, err = run_dump(dump, ["tensor", path, out, str(resize), str(crop)])
    if rc != 0:
        raise RuntimeError("image_dump tensor %s: exit %d: %s" % (path, rc, err))
    return np.load(out)


def dm_resize(dump, path, tmp, w, h):
    out = os.path.join(tmp, "out_resize.npy")
    rc, err = run_dump(dump, ["resize", path, out, str(w), str(h)])
    if rc != 0:
        raise RuntimeError("image_dump resize %s: exit %d: %s" % (path, rc, err))
    return np.load(out)


def pil_rgb(path):
    with Image.open(path) as im:
        return np.array(ImageOps.exif_transpose(im).convert("RGB"))


# ------------------------------------------------------------------ checks

def check_samples(dump, tmp):
    for name, (data, kind) in sorted(make_samples().items()):
        if data is None:
            skip("decode " + name, kind)
            continue
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        try:
            got, _ = dm_rgb(dump, path, tmp)
        except RuntimeError as e:
            report(False, "decode " + name, str(e))
            continue
        ref = pil_rgb(path)
        note = ""
        if kind == "gray16":
            # PIL opens 16-bit gray as mode "I" and convert("RGB") clips the
            # 16-bit value at 255 (almost white); dermal keeps the high byte
            # like PIL does for 16-bit RGB/RGBA/LA.  Compare with that.
            with Image.open(path) as im:
                hi = (np.array(im).astype(np.int64) >> 8).astype(np.uint8)
            pil_mean = np.abs(ref.astype(int) - np.dstack([hi] * 3)).mean()
            ref = np.dstack([hi] * 3)
            note = " (PIL itself clips to 255: known deviation, mean %.1f)" % pil_mean
        if got.shape != ref.shape:
            report(False, "decode " + name, "shape %s != PIL %s" % (got.shape, ref.shape))
            continue
        d = np.abs(got.astype(int) - ref.astype(int))
        mx, mean = int(d.max()), float(d.mean())
        if kind in ("exact", "gray16"):
            ok = mx == 0
        elif kind == "webp":
            ok = mx <= 2 and mean <= 0.1
        else:
            ok = mx <= TOL_JPEG_MAX and mean <= TOL_JPEG_MEAN
        report(ok, "decode " + name,
               "%s max|diff| %d mean %.4f%s" % ("x".join(map(str, got.shape)), mx, mean, note))


def tv_tensor(path, resize=256, crop=224):
    import torchvision.transforms as T
    with Image.open(path) as im:
        im = im.convert("RGB")
        t = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor()])(im)
    return t.numpy()


def check_fullres(dump, tmp, data_dir):
    img_dir = os.path.join(data_dir, "ham10000-fullres", "images")
    if not os.path.isdir(img_dir):
        skip("tensor parity on ham10000-fullres", "%s absent" % img_dir)
        return
    files = sorted(f for f in os.listdir(img_dir) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if not files:
        skip("tensor parity on ham10000-fullres", "no images in %s" % img_dir)
        return
    worst_frac, worst_max, tot, within, exact = 1.0, 0.0, 0, 0, 0
    n_ok = 0
    for f in files:
        path = os.path.join(img_dir, f)
        with Image.open(path) as im:
            short = min(im.size)
        if short >= 2 * 256:
            skip("tensor " + f, "would take the DCT-scaled path")
            continue
        try:
            got = dm_tensor(dump, path, tmp)
        except RuntimeError as e:
            report(False, "tensor " + f, str(e))
            continue
        ref = tv_tensor(path)
        if got.shape != ref.shape:
            report(False, "tensor " + f, "shape %s != %s" % (got.shape, ref.shape))
            continue
        d = np.abs(got - ref)
        frac = float((d <= TENSOR_TOL).mean())
        worst_frac = min(worst_frac, frac)
        worst_max = max(worst_max, float(d.max()))
        tot += d.size
        within += int((d <= TENSOR_TOL).sum())
        exact += int((d == 0).sum())
        ok = frac >= TENSOR_FRAC
        n_ok += ok
        if not ok:
            report(False, "tensor " + f, "only %.4f%% within 1/255, max %.4f" % (100 * frac, d.max()))
        else:
            counts["passed"] += 1
    print("ok     tensor parity on %d ham10000-fullres images: %d passed; max|diff| %.6f "
          "(%.2f/255), %.4f%% of %d elements within 1/255 (worst image %.4f%%), "
          "%.4f%% bit-identical" % (len(files), n_ok, worst_max, worst_max * 255,
                                    100.0 * within / max(tot, 1), tot,
                                    100 * worst_frac, 100.0 * exact / max(tot, 1)))


def check_resize(dump, tmp):
    """dm_image_resize against PIL's Image.resize(BILINEAR) (exact), on a
    lossless PNG so decoding plays no part."""
    rgb = Image.fromarray(base_rgb(301, 203, seed=3))
    path = os.path.join(tmp, "resize_src.png")
    rgb.save(path)
    for (w, h) in [(301, 203), (150, 101), (224, 224), (97, 31), (9, 500),
                   (640, 480), (1, 1), (1000, 17)]:
        try:
            got = dm_resize(dump, path, tmp, w, h)
        except RuntimeError as e:
            report(False, "resize %dx%d" % (w, h), str(e))
            continue
        ref = np.array(rgb.resize((w, h), Image.BILINEAR))
        d = np.abs(got.astype(int) - ref.astype(int))
        report(d.max() == 0, "resize 301x203 -> %dx%d" % (w, h), "max|diff| %d" % d.max())
    # tensor path on odd geometries: portrait, padding (crop > resized image)
    for (size, resize, crop) in [((203, 301), 256, 224), ((301, 203), 200, 224),
                                 ((40, 300), 100, 120)]:
        im = Image.fromarray(base_rgb(size[0], size[1], seed=4))
        p = os.path.join(tmp, "geom.png")
        im.save(p)
        got = dm_tensor(dump, p, tmp, resize, crop)
        ref = tv_tensor(p, resize, crop)
        d = np.abs(got - ref)
        report(got.shape == ref.shape and d.max() == 0,
               "tensor %dx%d resize %d crop %d" % (size[0], size[1], resize, crop),
               "max|diff| %.6f" % d.max())


def check_dct_scaled(dump, tmp):
    """A 2000x1500 JPEG decoded with target 256 takes the DCT path: the
    smallest factor k/8 keeping the shorter side >= 2 * 256 is 3/8
    (1500 * 3/8 -> 563 >= 512, 2/8 -> 375 < 512): 750x563.  Not
    bit-comparable with PIL's full decode; the check bounds the mean
    difference to PIL's full decode + bilinear resize to the same size
    (about 2.9 levels on this noisy synthetic image; bound 5)."""
    rgb = Image.fromarray(base_rgb(2000, 1500, seed=5))
    path = os.path.join(tmp, "big.jpg")
    rgb.save(path, quality=92)
    got, info = dm_rgb(dump, path, tmp, target=256)
    if got.shape[:2] != (563, 750):
        report(False, "DCT-scaled decode 2000x1500", "got %s, want 750x563 (%s)" % (got.shape, info))
        return
    ref = np.array(Image.open(path).convert("RGB").resize((750, 563), Image.BILINEAR))
    d = np.abs(got.astype(int) - ref.astype(int))
    report(d.mean() < 5.0, "DCT-scaled decode 2000x1500 -> 750x563 (3/8)",
           "vs PIL full decode + bilinear: mean|diff| %.3f max %d" % (d.mean(), d.max()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", help="path of the image_dump binary")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
    ap.add_argument("--seeds", help="write the fuzz seed corpus to this dir and exit")
    a = ap.parse_args()
    if a.seeds:
        write_seeds(a.seeds)
        return 0
    if not a.dump:
        ap.error("--dump is required")
    with tempfile.TemporaryDirectory(prefix="dm_image_parity") as tmp:
        for fn, args in ((check_samples, ()), (check_resize, ()),
                         (check_dct_scaled, ()), (check_fullres, (a.data,))):
            try:
                fn(a.dump, tmp, *args)
            except Exception as e:  # a crash of one part is one failure
                report(False, fn.__name__, "%s: %s" % (type(e).__name__, e))
    print("test_image_parity: %d passed, %d failed, %d skipped" %
          (counts["passed"], counts["failed"], counts["skipped"]))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
