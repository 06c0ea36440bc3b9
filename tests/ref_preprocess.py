#!/usr/bin/python3
"""ref_preprocess.py: writes the fixtures that tests/test_preprocess.c and tests/test_image.c compare
our decoding and preprocessing against, from Pillow 9.4 and torchvision 0.14 (Debian's
python3-pil / python3-torchvision). Run by developers, never by `make test`:

    /usr/bin/python3 tests/ref_preprocess.py [--shared DIR] [--check-all BUILD]

Everything lands in tests/fixtures/preprocess/ (about 1.6 MB in all):

  synthetic.txt     Pillow/torchvision results on synthetic images that the C test regenerates from
                    the same integer formula (pattern() below), as 64-bit hashes of the uint8 output:
                    `resize W H OW OH HASH SUM`  Image.resize((OW, OH), BILINEAR)
                    `prep W H HASH SUM`          torchvision resize(256) + center_crop(224)
                    `crop W H S HASH SUM`        torchvision center_crop(S) (zero padding included)
  normalize.f32     torchvision's convert_image_dtype + normalize of every uint8 value, (3, 256)
                    float32 little-endian: with a bit-exact uint8 crop it fixes the float tensor.
  formats/*         tiny images in the formats PIL converts to RGB in different ways (grayscale,
                    CMYK and Adobe-inverted JPEGs, LA/RGBA/palette PNGs, GIF), each beside PIL's
                    Image.open(f).convert('RGB') as <name>.rgb.png.
  real/<stem>.crop.png
                    torchvision's uint8 224x224 crop (before ToTensor) of real images: the PNG
                    Abyssinian_5.jpg, the GIF Abyssinian_34.jpg, and a fixed sample of JPEGs
                    (progressive, Adobe-marked, EXIF and plain ones).
  real/sources.sha256
                    the SHA-256 of each image those crops were made from (sha256sum format), so
                    that build/03-preprocessing --compare only compares a crop with the very same
                    file of another dataset root.
  real/jpeg_blocks.bin
                    for EVERY real JPEG: the sums over 16x16 blocks of its uint8 crop (14x14x3
                    uint16 values). From them the C test computes, for all JPEGs, lower bounds of
                    the max and mean absolute differences of the normalized tensors (the mean of a
                    block difference never exceeds the mean of the absolute differences in it).
                    Format: "PETBLK1\\n", uint32 count, then per image a 64-byte NUL-padded file
                    name and 588 little-endian uint16 (block row, block column, channel).

--check-all BUILD runs BUILD/test-preprocess-real --dump-crops DIR (our crops of every image) and
prints the exact max / mean absolute differences of the normalized tensors against torchvision
over all real JPEGs: the full measurement behind the sampled test.
"""
import argparse
import glob
import hashlib
import io
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from torchvision.models import ResNet34_Weights
from torchvision.transforms import InterpolationMode
import torchvision.transforms.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "preprocess")
DEFAULT_SHARED = os.path.join(HERE, "..", "..", "shared", "data", "oxford-iiit-pet-3class")

M64 = (1 << 64) - 1
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def pattern(w, h):
    """The synthetic test image (h, w, 3) uint8: noise in red, a smooth diagonal ramp in green, a
    3x5 checkerboard in blue. tests/test_preprocess.c computes the same integers."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint64)
    mask = np.uint64(0xFFFFFFFF)
    hsh = ((x * np.uint64(73856093)) & mask) ^ ((y * np.uint64(19349663)) & mask) ^ np.uint64(w * 83492791 & 0xFFFFFFFF)
    r = (hsh >> np.uint64(8)) & np.uint64(255)
    den = max(w + h - 2, 1)
    g = ((x + y) * np.uint64(255)) // np.uint64(den)
    b = ((x // np.uint64(3) + y // np.uint64(5)) % np.uint64(2)) * np.uint64(200) + np.uint64(20)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def hash_bytes(a):
    """64-bit position-weighted sum of (byte + 1) * (i * K1 + K2), mod 2^64 (also in C)."""
    b = np.frombuffer(np.ascontiguousarray(a).tobytes(), dtype=np.uint8).astype(np.uint64)
    i = np.arange(b.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        m = i * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
        h = np.sum((b + np.uint64(1)) * m, dtype=np.uint64)
    return int(h) & M64, int(b.sum())


def tv_crop(img):
    """torchvision's ResNet34 transforms up to the uint8 crop (before pil_to_tensor)."""
    img = F.resize(img, [256], interpolation=InterpolationMode.BILINEAR)
    return F.center_crop(img, [224])


def tv_tensor(img):
    return ResNet34_Weights.IMAGENET1K_V1.transforms()(img)


def normalize_u8(crop):
    """normalized float tensor of a uint8 HWC crop, as torchvision computes it."""
    t = torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1)
    t = F.convert_image_dtype(t, torch.float)
    return F.normalize(t, mean=MEAN, std=STD)


def write_synthetic():
    lines = ["# generated by tests/ref_preprocess.py (Pillow %s, torchvision)" % Image.__version__]
    resizes = [(500, 375, 341, 256), (375, 500, 256, 341), (200, 150, 341, 256),
               (1, 1, 256, 256), (1, 1, 3, 5), (2, 2, 1, 1), (3, 500, 7, 90), (500, 3, 90, 7),
               (3, 500, 256, 300), (37, 1000, 9, 250), (1000, 37, 13, 2), (640, 480, 320, 240),
               (257, 256, 257, 256), (256, 300, 256, 200), (300, 256, 200, 256),
               (123, 77, 200, 51), (7, 3, 5, 9), (64, 64, 64, 64), (1500, 1100, 349, 256),
               (4000, 30, 50, 3)]
    for w, h, ow, oh in resizes:
        out = np.asarray(Image.fromarray(pattern(w, h)).resize((ow, oh), Image.BILINEAR))
        hs, s = hash_bytes(out)
        lines.append("resize %d %d %d %d %016x %d" % (w, h, ow, oh, hs, s))
    preps = [(500, 375), (375, 500), (200, 150), (1, 1), (3, 500), (500, 3), (257, 256),
             (256, 257), (225, 224), (341, 256), (343, 256), (256, 343), (499, 333), (1024, 768),
             (256, 256), (224, 224), (100, 60)]
    for w, h in preps:
        img = Image.fromarray(pattern(w, h))
        crop = np.asarray(tv_crop(img))
        assert crop.shape == (224, 224, 3)
        # the float tensor is fully determined by the uint8 crop
        assert torch.equal(normalize_u8(crop), tv_tensor(img))
        hs, s = hash_bytes(crop)
        lines.append("prep %d %d %016x %d" % (w, h, hs, s))
    for w, h, size in [(100, 50, 224), (300, 200, 224), (225, 301, 224), (223, 224, 224),
                       (5, 5, 4), (6, 9, 3), (3, 3, 8)]:
        crop = np.asarray(F.center_crop(Image.fromarray(pattern(w, h)), [size]))
        hs, s = hash_bytes(crop)
        lines.append("crop %d %d %d %016x %d" % (w, h, size, hs, s))
    with open(os.path.join(OUT, "synthetic.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    # normalization of every uint8 value
    v = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (1, 1, 3))  # (1, 256, 3)
    norm = normalize_u8(v)[:, 0, :].numpy().astype("<f4")  # (3, 256)
    norm.tofile(os.path.join(OUT, "normalize.f32"))


def write_formats():
    d = os.path.join(OUT, "formats")
    os.makedirs(d, exist_ok=True)
    base = Image.fromarray(pattern(24, 16))
    alpha = Image.fromarray((pattern(16, 24)[:, :, 0].T.copy()))  # (16, 24) noise alpha
    files = {}
    buf = io.BytesIO(); base.convert("L").save(buf, "JPEG", quality=92); files["gray.jpg"] = buf.getvalue()
    buf = io.BytesIO(); base.convert("CMYK").save(buf, "JPEG", quality=92); files["cmyk.jpg"] = buf.getvalue()
    buf = io.BytesIO(); base.save(buf, "JPEG", quality=92, subsampling=0); files["rgb444.jpg"] = buf.getvalue()
    buf = io.BytesIO(); base.save(buf, "JPEG", quality=92, progressive=True); files["progressive.jpg"] = buf.getvalue()
    la = base.convert("L"); la.putalpha(alpha); buf = io.BytesIO(); la.save(buf, "PNG"); files["la.png"] = buf.getvalue()
    rgba = base.copy(); rgba.putalpha(alpha); buf = io.BytesIO(); rgba.save(buf, "PNG"); files["rgba.png"] = buf.getvalue()
    pal = base.quantize(colors=16)
    buf = io.BytesIO(); pal.save(buf, "PNG", transparency=3); files["palette_trns.png"] = buf.getvalue()
    buf = io.BytesIO(); pal.save(buf, "GIF"); files["palette.gif"] = buf.getvalue()
    buf = io.BytesIO(); base.convert("L").save(buf, "GIF"); files["gray.gif"] = buf.getvalue()
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        rgb = Image.open(io.BytesIO(data)).convert("RGB")
        rgb.save(os.path.join(d, name + ".rgb.png"), "PNG")


def real_files(shared):
    imgs = os.path.join(shared, "images")
    out = {"jpeg": [], "png": [], "gif": []}
    for p in sorted(glob.glob(os.path.join(imgs, "*.jpg"))):
        try:
            fmt = Image.open(p).format
        except Exception:
            continue
        out[{"JPEG": "jpeg", "PNG": "png", "GIF": "gif"}[fmt]].append(p)
    return out


# A fixed sample of the real JPEGs stored whole: two progressive, two with an Adobe marker, one with
# EXIF, and plain ones spread over the three breeds.
JPEG_SAMPLE = ["Abyssinian_120.jpg", "Bengal_183.jpg", "Abyssinian_121.jpg", "Bengal_192.jpg",
               "Abyssinian_1.jpg", "Abyssinian_60.jpg", "american_bulldog_10.jpg",
               "american_bulldog_111.jpg", "american_bulldog_200.jpg", "Bengal_1.jpg",
               "Bengal_100.jpg", "Bengal_57.jpg"]


def write_real(shared):
    d = os.path.join(OUT, "real")
    os.makedirs(d, exist_ok=True)
    files = real_files(shared)
    stems = [os.path.basename(p) for p in files["png"] + files["gif"]] + JPEG_SAMPLE
    sums = []
    for name in stems:
        with open(os.path.join(shared, "images", name), "rb") as f:
            sums.append("%s  %s\n" % (hashlib.sha256(f.read()).hexdigest(), name))
        img = Image.open(os.path.join(shared, "images", name)).convert("RGB")
        crop = tv_crop(img)
        assert torch.equal(normalize_u8(np.asarray(crop)), tv_tensor(img))
        crop.save(os.path.join(d, name[:-4] + ".crop.png"), "PNG", optimize=True)
    with open(os.path.join(d, "sources.sha256"), "w") as f:
        f.write("".join(sorted(sums, key=lambda l: l.split()[1])))
    recs = []
    for p in files["jpeg"]:
        crop = np.asarray(tv_crop(Image.open(p).convert("RGB"))).astype(np.uint32)
        sums = crop.reshape(14, 16, 14, 16, 3).sum(axis=(1, 3))  # (14, 14, 3)
        assert sums.max() < 65536
        name = os.path.basename(p).encode()
        assert len(name) < 64
        recs.append(name.ljust(64, b"\0") + sums.astype("<u2").tobytes())
    with open(os.path.join(d, "jpeg_blocks.bin"), "wb") as f:
        f.write(b"PETBLK1\n" + struct.pack("<I", len(recs)) + b"".join(recs))
    print("real: %d crops, block sums of %d JPEGs" % (len(stems), len(recs)))


def check_all(shared, build):
    """exact max / mean abs differences of our normalized tensors vs torchvision's, all images."""
    files = real_files(shared)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([os.path.join(build, "test-preprocess-real"), "--dump-crops", tmp, shared],
                       check=True)
        for kind in ("png", "gif", "jpeg"):
            mx, total, count, worst = 0.0, 0.0, 0, (0.0, "")
            for p in files[kind]:
                ours = np.fromfile(os.path.join(tmp, os.path.basename(p) + ".u8"), dtype=np.uint8)
                ours = normalize_u8(ours.reshape(224, 224, 3))
                ref = tv_tensor(Image.open(p).convert("RGB"))
                diff = (ours - ref).abs()
                mx = max(mx, float(diff.max()))
                total += float(diff.double().sum())
                count += diff.numel()
                worst = max(worst, (float(diff.mean()), os.path.basename(p)))
            print("%s: %d images, max abs diff %.6g, mean abs diff %.6g (largest mean of one "
                  "image: %.6g, %s)" % (kind, len(files[kind]), mx, total / max(count, 1), *worst))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=DEFAULT_SHARED, help="3-class Oxford-IIIT Pet root")
    ap.add_argument("--check-all", metavar="BUILD", help="compare every real image via BUILD")
    a = ap.parse_args()
    if a.check_all:
        check_all(a.shared, a.check_all)
        return
    os.makedirs(OUT, exist_ok=True)
    write_synthetic()
    write_formats()
    if os.path.isdir(os.path.join(a.shared, "images")):
        write_real(a.shared)
    else:
        print("no %s: real-image fixtures not written" % a.shared, file=sys.stderr)


if __name__ == "__main__":
    main()
