#!/usr/bin/env python3
"""Write tests/data/embed/vit-tiny/: a tiny random CLIP vision model and the
vectors it must give, computed here in float64 numpy, independently of the C
code (embed/image.c, embed/vit.c), for tests/unit/test_embed_vit.c.

  config.json          a CLIPConfig with a vision_config (image 32, patch 8,
                       hidden 48, 2 layers, 4 heads, MLP 96, projection 16)
  model.safetensors    F16 weights under the HF names (written by hand:
                       8-byte LE header length, JSON header, data), plus a
                       text-tower tensor the loader must ignore
  img_*.png / *.jpg    test images: RGB, RGBA, gray, 4-bit gray, palette,
                       16-bit PNGs; colour and gray JPEGs; sizes that
                       enlarge, shrink (antialiased) and keep the image
  huge_side.png,       headers that declare too many pixels (ELIMIT)
  huge_pixels.jpg
  expected.json        per image: its size and the expected unit vector

Reference semantics (reference/embeddings-and-datasets.md §1.7 and
docs/embeddings.md "Images"):
  decode -> RGB8 (alpha dropped, gray replicated, palette expanded, 16-bit
  high byte), resize the short side to 32 with PIL's bicubic (a = -0.5,
  kernel stretched by the downscale factor, taps renormalised, clamp to
  [0, 255] after each pass, horizontal first), centre crop ((r - s) // 2),
  /255, (v - mean) / std, conv patches, class token, positions,
  pre_layrnorm, pre-LN layers with quick_gelu, token 0, post_layernorm,
  visual_projection, L2 normalisation.

JPEG pixels come from libjpeg-turbo's own `djpeg` (Debian
libjpeg-turbo-progs; `cjpeg` makes the files), so the JPEG cases check
decoding glue, not an independent JPEG decoder. Run:
  build/asan/venv/bin/python scripts/make_vit_fixture.py
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "embed",
                   "vit-tiny")
IMAGE, PATCH, HIDDEN, LAYERS, HEADS, MLP, PROJ, EPS = 32, 8, 48, 2, 4, 96, 16, 1e-5
MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])

rng = np.random.default_rng(20240605)


# ------------------------------------------------------------ weights

def make_weights():
    g = PATCH * PATCH * 3
    tokens = (IMAGE // PATCH) ** 2 + 1
    w = {}
    vm = "vision_model."
    w[vm + "embeddings.class_embedding"] = rng.normal(0, 0.5, HIDDEN)
    w[vm + "embeddings.patch_embedding.weight"] = rng.normal(0, 1 / np.sqrt(g),
                                                             (HIDDEN, 3, PATCH, PATCH))
    w[vm + "embeddings.position_embedding.weight"] = rng.normal(0, 0.3, (tokens, HIDDEN))
    for n in ("pre_layrnorm", "post_layernorm"):
        w[vm + n + ".weight"] = 1 + rng.normal(0, 0.2, HIDDEN)
        w[vm + n + ".bias"] = rng.normal(0, 0.1, HIDDEN)
    for i in range(LAYERS):
        p = vm + "encoder.layers.%d." % i
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[p + "self_attn." + n + ".weight"] = rng.normal(0, 1 / np.sqrt(HIDDEN),
                                                              (HIDDEN, HIDDEN))
            w[p + "self_attn." + n + ".bias"] = rng.normal(0, 0.1, HIDDEN)
        for n in ("layer_norm1", "layer_norm2"):
            w[p + n + ".weight"] = 1 + rng.normal(0, 0.2, HIDDEN)
            w[p + n + ".bias"] = rng.normal(0, 0.1, HIDDEN)
        w[p + "mlp.fc1.weight"] = rng.normal(0, 1 / np.sqrt(HIDDEN), (MLP, HIDDEN))
        w[p + "mlp.fc1.bias"] = rng.normal(0, 0.1, MLP)
        w[p + "mlp.fc2.weight"] = rng.normal(0, 1 / np.sqrt(MLP), (HIDDEN, MLP))
        w[p + "mlp.fc2.bias"] = rng.normal(0, 0.1, HIDDEN)
    w["visual_projection.weight"] = rng.normal(0, 1 / np.sqrt(HIDDEN), (PROJ, HIDDEN))
    w["text_projection.weight"] = rng.normal(0, 1, (PROJ, 8))  # ignored by the loader
    # Stored as F16: the reference uses exactly the stored values.
    return {k: v.astype(np.float16) for k, v in w.items()}


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = tensors[name].astype("<f2").tobytes()
        header[name] = {"dtype": "F16", "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ------------------------------------------------------------ images

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xffffffff)


def png_bytes(w, h, color_type, depth, rows, plte=None, trns=None):
    """rows: bytes of each scanline (unfiltered); filter 0 on every row."""
    raw = b"".join(b"\0" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth,
                                                                 color_type, 0, 0, 0))
    if plte is not None:
        out += png_chunk(b"PLTE", plte)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    return out + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")


def smooth_image(w, h, ch, depth_max=255):
    """Gradients, a disc and mild noise: compressible, yet every pixel differs."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(ch):
        f = (0.5 + 0.5 * np.sin(x / (3.0 + c) + y / (5.0 + 2 * c) + c)) * 0.7
        f += 0.3 * (((x - w * 0.4) ** 2 + (y - h * 0.6) ** 2) < (min(w, h) * 0.3) ** 2)
        f += rng.normal(0, 0.03, (h, w))
        chans.append(np.clip(np.round(f * depth_max), 0, depth_max))
    return np.stack(chans, axis=-1).astype(np.int64)


def ppm_bytes(px):
    h, w, c = px.shape
    magic = b"P6" if c == 3 else b"P5"
    return b"%s\n%d %d\n255\n" % (magic, w, h) + px.astype(np.uint8).tobytes()


def parse_pnm(b):
    parts, pos = [], 0
    while len(parts) < 4:
        while b[pos:pos + 1].isspace():
            pos += 1
        start = pos
        while not b[pos:pos + 1].isspace():
            pos += 1
        parts.append(b[start:pos])
    pos += 1
    w, h = int(parts[1]), int(parts[2])
    c = 3 if parts[0] == b"P6" else 1
    a = np.frombuffer(b[pos:pos + w * h * c], np.uint8).reshape(h, w, c).astype(np.int64)
    return np.repeat(a, 3, axis=2) if c == 1 else a


def jpeg_pair(px, quality, gray):
    """(JPEG bytes from cjpeg, RGB pixels djpeg decodes them to)."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "in.pnm")
        with open(src, "wb") as f:
            f.write(ppm_bytes(px))
        args = ["cjpeg", "-quality", str(quality)] + (["-grayscale"] if gray else []) + [src]
        jpg = subprocess.run(args, check=True, capture_output=True).stdout
        dst = os.path.join(d, "in.jpg")
        with open(dst, "wb") as f:
            f.write(jpg)
        dec = subprocess.run(["djpeg", "-pnm", dst], check=True, capture_output=True).stdout
    return jpg, parse_pnm(dec)


def make_images():
    """[(file name, encoded bytes, RGB8 reference pixels [h, w, 3])]"""
    out = []
    # RGB8, shrunk (short side 37 -> 32: the stretched kernel).
    a = smooth_image(50, 37, 3)
    out.append(("img_rgb.png", png_bytes(50, 37, 2, 8, [r.astype(np.uint8).tobytes()
                                                        for r in a]), a))
    # RGB8, enlarged (short side 20 -> 32), portrait.
    a = smooth_image(20, 27, 3)
    out.append(("img_small.png", png_bytes(20, 27, 2, 8, [r.astype(np.uint8).tobytes()
                                                          for r in a]), a))
    # RGB8 exactly the model's size: the resize is the identity.
    a = smooth_image(32, 32, 3)
    out.append(("img_exact.png", png_bytes(32, 32, 2, 8, [r.astype(np.uint8).tobytes()
                                                          for r in a]), a))
    # RGBA8: alpha dropped, as PIL's convert("RGB").
    a = smooth_image(40, 40, 4)
    out.append(("img_rgba.png", png_bytes(40, 40, 6, 8, [r.astype(np.uint8).tobytes()
                                                         for r in a]), a[:, :, :3]))
    # Gray8, tall.
    a = smooth_image(33, 64, 1)
    out.append(("img_gray.png", png_bytes(33, 64, 0, 8, [r.astype(np.uint8).tobytes()
                                                         for r in a]),
                np.repeat(a, 3, axis=2)))
    # Gray 4-bit: libpng scales 4-bit samples to 8 bits by bit replication (v * 17).
    a = smooth_image(34, 34, 1, 15)
    rows = []
    for r in a[:, :, 0]:
        v = list(r) + [0] * (len(r) % 2)
        rows.append(bytes((v[i] << 4) | v[i + 1] for i in range(0, len(v), 2)))
    out.append(("img_gray4.png", png_bytes(34, 34, 0, 4, rows), np.repeat(a * 17, 3, axis=2)))
    # Palette 8-bit with a tRNS chunk (ignored: palette colours only).
    pal = rng.integers(0, 256, (64, 3))
    idx = smooth_image(30, 24, 1, 63)[:, :, 0]
    out.append(("img_palette.png",
                png_bytes(30, 24, 3, 8, [r.astype(np.uint8).tobytes() for r in idx],
                          plte=pal.astype(np.uint8).tobytes(), trns=bytes(range(0, 256, 4))),
                pal[idx]))
    # RGB 16-bit: the high byte of each sample.
    a = smooth_image(36, 36, 3, 65535)
    out.append(("img_rgb16.png", png_bytes(36, 36, 2, 16, [r.astype(">u2").tobytes()
                                                           for r in a]), a >> 8))
    # JPEGs (4:2:0 colour from cjpeg's defaults; gray), one shrunk about 4x.
    for name, w, h, gray, q in (("img_color.jpg", 64, 48, False, 90),
                                ("img_gray.jpg", 40, 52, True, 85),
                                ("img_big.jpg", 160, 120, False, 80)):
        jpg, ref = jpeg_pair(smooth_image(w, h, 3), q, gray)
        out.append((name, jpg, ref))
    return out


# ------------------------------------------------------------ reference

def cubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, a * (((x - 5) * x + 8) * x - 4), 0.0))


def resample_matrix(n_in, n_out):
    """[n_out, n_in] weights of PIL's separable bicubic along one axis."""
    scale = n_in / n_out
    fs = max(scale, 1.0)
    support = 2.0 * fs
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(np.floor(center - support + 0.5)), 0)
        hi = min(int(np.floor(center + support + 0.5)), n_in)
        j = np.arange(lo, hi)
        wts = cubic((j + 0.5 - center) / fs)
        m[i, lo:hi] = wts / wts.sum()
    return m


def preprocess(px):
    h, w, _ = px.shape
    if w <= h:
        rw, rh = IMAGE, int(IMAGE * h / w)
    else:
        rw, rh = int(IMAGE * w / h), IMAGE
    img = px.astype(np.float64)
    img = np.clip(np.einsum("xj,hjc->hxc", resample_matrix(w, rw), img), 0, 255)  # horizontal
    img = np.clip(np.einsum("yi,ixc->yxc", resample_matrix(h, rh), img), 0, 255)  # vertical
    top, left = (rh - IMAGE) // 2, (rw - IMAGE) // 2
    img = img[top:top + IMAGE, left:left + IMAGE]
    return ((img / 255.0 - MEAN) / STD).transpose(2, 0, 1)  # [3, S, S]


def layer_norm(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * g + b


def forward(w, chw):
    f = {k: v.astype(np.float64) for k, v in w.items()}
    vm = "vision_model."
    grid = IMAGE // PATCH
    conv = f[vm + "embeddings.patch_embedding.weight"]
    patches = np.empty((grid * grid, HIDDEN))
    for gy in range(grid):
        for gx in range(grid):
            win = chw[:, gy * PATCH:(gy + 1) * PATCH, gx * PATCH:(gx + 1) * PATCH]
            patches[gy * grid + gx] = np.tensordot(conv, win, axes=([1, 2, 3], [0, 1, 2]))
    x = np.vstack([f[vm + "embeddings.class_embedding"][None], patches])
    x = x + f[vm + "embeddings.position_embedding.weight"]
    x = layer_norm(x, f[vm + "pre_layrnorm.weight"], f[vm + "pre_layrnorm.bias"])
    dh = HIDDEN // HEADS
    for i in range(LAYERS):
        p = vm + "encoder.layers.%d." % i
        lin = lambda n, v: v @ f[p + n + ".weight"].T + f[p + n + ".bias"]
        h = layer_norm(x, f[p + "layer_norm1.weight"], f[p + "layer_norm1.bias"])
        q, k, v = (lin("self_attn.%s_proj" % n, h) for n in "qkv")
        ctx = np.empty_like(h)
        for hd in range(HEADS):
            sl = slice(hd * dh, (hd + 1) * dh)
            s = q[:, sl] @ k[:, sl].T / np.sqrt(dh)
            s = np.exp(s - s.max(-1, keepdims=True))
            ctx[:, sl] = (s / s.sum(-1, keepdims=True)) @ v[:, sl]
        x = x + lin("self_attn.out_proj", ctx)
        h = layer_norm(x, f[p + "layer_norm2.weight"], f[p + "layer_norm2.bias"])
        h = lin("mlp.fc1", h)
        h = h / (1 + np.exp(-1.702 * h))  # quick_gelu
        x = x + lin("mlp.fc2", h)
    e = layer_norm(x[0], f[vm + "post_layernorm.weight"], f[vm + "post_layernorm.bias"])
    e = f["visual_projection.weight"] @ e
    return e / np.linalg.norm(e)


# ------------------------------------------------------------ main

def main():
    os.makedirs(OUT, exist_ok=True)
    config = {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": PROJ,
        "text_config": {"hidden_size": 8, "model_type": "clip_text_model"},
        "vision_config": {"hidden_size": HIDDEN, "intermediate_size": MLP,
                          "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
                          "image_size": IMAGE, "patch_size": PATCH, "hidden_act": "quick_gelu",
                          "layer_norm_eps": EPS, "model_type": "clip_vision_model",
                          "projection_dim": PROJ},
    }
    with open(os.path.join(OUT, "config.json"), "w") as fp:
        json.dump(config, fp, indent=2)
        fp.write("\n")
    w = make_weights()
    write_safetensors(os.path.join(OUT, "model.safetensors"), w)
    cases = []
    for name, data, px in make_images():
        with open(os.path.join(OUT, name), "wb") as fp:
            fp.write(data)
        vec = forward(w, preprocess(px))
        cases.append({"file": name, "width": px.shape[1], "height": px.shape[0],
                      "vector": [float("%.9g" % v) for v in vec]})
    # Headers over the limits: a PNG 20000 pixels wide; a JPEG of 8000 x 8000
    # (each side allowed, the pixel count not): cjpeg output with its SOF0
    # dimensions patched.
    with open(os.path.join(OUT, "huge_side.png"), "wb") as fp:
        fp.write(png_bytes(20000, 2, 0, 8, [bytes(20000)] * 2))
    jpg, _ = jpeg_pair(smooth_image(16, 16, 3), 50, False)
    sof = jpg.index(b"\xff\xc0")
    jpg = jpg[:sof + 5] + struct.pack(">HH", 8000, 8000) + jpg[sof + 9:]
    with open(os.path.join(OUT, "huge_pixels.jpg"), "wb") as fp:
        fp.write(jpg)
    with open(os.path.join(OUT, "expected.json"), "w") as fp:
        json.dump({"generator": "scripts/make_vit_fixture.py", "dim": PROJ,
                   "image_size": IMAGE, "cases": cases}, fp, indent=1)
        fp.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print("wrote %d images, %d bytes in %s" % (len(cases), total, os.path.normpath(OUT)))


if __name__ == "__main__":
    sys.exit(main())
