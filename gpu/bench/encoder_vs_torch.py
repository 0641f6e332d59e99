#!/usr/bin/env python3
"""Text encoding on the GPU: vela's BERT encoder (gpu_bert_*) against torch.

One run, same card, same weights (all-MiniLM-L6-v2's shape: 6 layers, hidden
384, 12 heads, FFN 1536, vocab 30522, erf-GELU, LayerNorm eps 1e-12, mean
pooling then L2 normalisation):

  - weights: a seeded random transformers.BertModel (no download):
    Linear/Embedding ~N(0, 0.05) (HF init with initializer_range 0.05),
    biases ~N(0, 0.05), LayerNorm gamma ~1 + N(0, 0.1), beta ~N(0, 0.1).
    vela gets the same fp32 state_dict through gpu_bert_set_tensor (it keeps
    the GEMM weights in F16).
  - torch fp16 baseline, what sentence-transformers' encode() does without
    its tokenizer: the model in fp16 (model.half()) in eval mode, sequences
    sorted by length (longest first), padded batches of --bs (64 and 256)
    with an attention mask, mean pooling over the mask, F.normalize, results
    copied to the host per batch. The padded host tensors are built before
    timing (tokenization is outside both timings); host->device copies are
    inside.
  - vela: one gpu_bert_encode call over all sequences, packed without padding
    in their given order (token ids in, host vectors out: transfers inside).
  - workloads (token counts include [CLS] and [SEP]):
      glosses: 20,000 sequences, lengths round(exp(N(2.9, 0.4))) clipped to
               8..64 (mean ~20, median ~18: the shape of WordNet gloss
               lengths under WordPiece), ids uniform in 1000..30521;
      queries: 20,000 sequences, lengths uniform in 4..12.
  - agreement: per-sequence cosine between vela and torch fp32 (no TF32) on
    the first 1,000 glosses (min and mean), and between torch fp16 and fp32.

Usage: python3 gpu/bench/encoder_vs_torch.py --lib build/gpu/libvela_gpu.so
       [--n 20000 --reps 3 --budgets 8192,16384,32768]
"""
import argparse
import copy
import ctypes as C
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import BertConfig, BertModel

VELA_ENOTFOUND = -31003


class Err(C.Structure):
    _fields_ = [("code", C.c_int), ("msg", C.c_char * 256)]


class BertCfg(C.Structure):  # gpu_bert_config_t
    _fields_ = [("hidden", C.c_uint32), ("layers", C.c_uint32), ("heads", C.c_uint32),
                ("intermediate", C.c_uint32), ("vocab", C.c_uint32),
                ("max_pos", C.c_uint32), ("type_vocab", C.c_uint32),
                ("batch_tokens", C.c_uint32), ("ln_eps", C.c_float)]


class Vela:
    def __init__(self, path):
        self.lib = L = C.CDLL(path)
        L.gpu_ctx_open.argtypes = [C.c_int, C.POINTER(C.c_void_p), C.POINTER(Err)]
        L.gpu_ctx_name.restype = C.c_char_p
        L.gpu_ctx_name.argtypes = [C.c_void_p]
        L.gpu_bert_create.argtypes = [C.c_void_p, C.POINTER(BertCfg), C.POINTER(C.c_void_p),
                                      C.POINTER(Err)]
        L.gpu_bert_set_tensor.argtypes = [C.c_void_p, C.c_char_p, C.c_void_p, C.c_size_t,
                                          C.POINTER(Err)]
        L.gpu_bert_encode.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p, C.c_uint32,
                                      C.c_void_p, C.POINTER(Err)]
        L.gpu_bert_bytes.restype = C.c_size_t
        L.gpu_bert_bytes.argtypes = [C.c_void_p]
        L.gpu_bert_free.argtypes = [C.c_void_p]
        self.ctx = C.c_void_p()
        e = Err()
        if L.gpu_ctx_open(0, C.byref(self.ctx), C.byref(e)):
            sys.exit("gpu_ctx_open: " + e.msg.decode())
        self.name = L.gpu_ctx_name(self.ctx).decode()

    def bert(self, hf, state, batch_tokens):
        cfg = BertCfg(hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads,
                      hf.intermediate_size, hf.vocab_size, hf.max_position_embeddings,
                      hf.type_vocab_size, batch_tokens, hf.layer_norm_eps)
        b, e = C.c_void_p(), Err()
        if self.lib.gpu_bert_create(self.ctx, C.byref(cfg), C.byref(b), C.byref(e)):
            sys.exit("gpu_bert_create: " + e.msg.decode())
        skipped = []
        for name, a in state.items():
            rc = self.lib.gpu_bert_set_tensor(b, name.encode(), a.ctypes.data, a.size,
                                              C.byref(e))
            if rc == VELA_ENOTFOUND:
                skipped.append(name)
            elif rc:
                sys.exit(f"gpu_bert_set_tensor({name}): " + e.msg.decode())
        return b, skipped

    def encode(self, b, ids, offs, hidden):
        n = len(offs) - 1
        out = np.empty((n, hidden), np.float32)
        e = Err()
        if self.lib.gpu_bert_encode(b, ids.ctypes.data, offs.ctypes.data, n, out.ctypes.data,
                                    C.byref(e)):
            sys.exit("gpu_bert_encode: " + e.msg.decode())
        return out


def make_model(seed):
    hf = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                    num_attention_heads=12, intermediate_size=1536, hidden_act="gelu",
                    max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    initializer_range=0.05)
    torch.manual_seed(seed)
    model = BertModel(hf, add_pooling_layer=False).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.normal_(1.0, 0.1)
                mod.bias.normal_(0.0, 0.1)
            elif isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                mod.bias.normal_(0.0, 0.05)
    return hf, model


def make_seqs(n, lo, hi, rng, gloss):
    if gloss:
        lens = np.clip(np.round(np.exp(rng.normal(2.9, 0.4, n))), lo, hi).astype(np.int64)
    else:
        lens = rng.integers(lo, hi + 1, n)
    seqs = []
    for L in lens:
        s = rng.integers(1000, 30522, int(L)).astype(np.int64)
        s[0], s[-1] = 101, 102  # [CLS] ... [SEP]
        seqs.append(s)
    return seqs


def packed(seqs):
    ids = np.ascontiguousarray(np.concatenate(seqs).astype(np.uint32))
    offs = np.zeros(len(seqs) + 1, np.uint32)
    offs[1:] = np.cumsum([len(s) for s in seqs])
    return ids, offs


def padded_batches(seqs, bs):
    """sentence-transformers' order: longest first; batches padded to their longest."""
    order = np.argsort([-len(s) for s in seqs], kind="stable")
    batches = []
    for i in range(0, len(seqs), bs):
        idx = order[i:i + bs]
        L = max(len(seqs[j]) for j in idx)
        ids = np.zeros((len(idx), L), np.int64)
        mask = np.zeros((len(idx), L), np.int64)
        for r, j in enumerate(idx):
            ids[r, :len(seqs[j])] = seqs[j]
            mask[r, :len(seqs[j])] = 1
        batches.append((idx, torch.from_numpy(ids).pin_memory(),
                        torch.from_numpy(mask).pin_memory()))
    return batches


@torch.inference_mode()
def torch_encode(model, batches, n, hidden):
    out = torch.empty(n, hidden)
    for idx, ids, mask in batches:
        ids_d = ids.to("cuda", non_blocking=True)
        mask_d = mask.to("cuda", non_blocking=True)
        h = model(input_ids=ids_d, attention_mask=mask_d).last_hidden_state
        m = mask_d.unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)  # sentence-transformers Pooling
        e = F.normalize(e, p=2, dim=1)                   # Normalize module
        out[torch.from_numpy(idx)] = e.float().cpu()
    return out.numpy()


def timed(fn, reps):
    fn()  # warm-up (cuBLAS heuristics, allocator)
    t = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = fn()
        torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    return statistics.median(t), r


def cosines(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--agree", type=int, default=1000)
    ap.add_argument("--budgets", default="8192,16384,32768")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    t_start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    v = Vela(a.lib)
    hf, model32 = make_model(a.seed)
    H = hf.hidden_size
    state = {k: np.ascontiguousarray(t.detach().float().cpu().numpy())
             for k, t in model32.state_dict().items()}
    model16 = copy.deepcopy(model32).half().cuda().eval()
    model32 = model32.cuda()
    print(f"device: {v.name}; torch {torch.__version__} sees {torch.cuda.get_device_name()}; "
          f"transformers {transformers.__version__}, attention "
          f"{getattr(model16.config, '_attn_implementation', '?')}")

    rng = np.random.default_rng(a.seed)
    work = {"glosses": make_seqs(a.n, 8, 64, rng, True),
            "queries": make_seqs(a.n, 4, 12, rng, False)}
    for name, seqs in work.items():
        lens = np.array([len(s) for s in seqs])
        print(f"{name}: {len(seqs)} sequences, {lens.sum()} tokens, length mean {lens.mean():.1f} "
              f"median {np.median(lens):.0f} min {lens.min()} max {lens.max()}")

    budgets = [int(x) for x in a.budgets.split(",")]
    berts = {}
    for bt in budgets:
        b, skipped = v.bert(hf, state, bt)
        berts[bt] = b
    print(f"vela: weights uploaded ({v.lib.gpu_bert_bytes(berts[budgets[0]]) / 2**20:.0f} MiB "
          f"on the device at budget {budgets[0]}); not used: {', '.join(skipped) or 'none'}")

    rows = []  # (workload, system, seconds, sentences, tokens)
    results = {}
    for wname, seqs in work.items():
        n = len(seqs)
        ntok = int(sum(len(s) for s in seqs))
        ids, offs = packed(seqs)
        best = None
        for bt in budgets:
            sec, out = timed(lambda: v.encode(berts[bt], ids, offs, H), a.reps)
            print(f"  {wname:8s} vela budget {bt:6d} tokens: {sec * 1e3:8.1f} ms "
                  f"{n / sec:10.0f} seq/s {ntok / sec:12.0f} tok/s", flush=True)
            rows.append((wname, f"vela packed, budget {bt}", sec, n, ntok))
            if best is None or sec < best[0]:
                best = (sec, bt, out)
        results[(wname, "vela")] = best[2]
        for bs in (64, 256):
            batches = padded_batches(seqs, bs)
            sec, out = timed(lambda: torch_encode(model16, batches, n, H), a.reps)
            print(f"  {wname:8s} torch fp16 bs {bs:3d}: {sec * 1e3:8.1f} ms "
                  f"{n / sec:10.0f} seq/s {ntok / sec:12.0f} tok/s", flush=True)
            rows.append((wname, f"torch fp16, padded bs {bs}", sec, n, ntok))
            results[(wname, f"torch{bs}")] = out
        torch.cuda.empty_cache()

    # agreement on the first --agree glosses
    g = work["glosses"][:a.agree]
    ref32 = torch_encode(model32, padded_batches(g, 64), len(g), H)
    c_vela = cosines(results[("glosses", "vela")][:a.agree], ref32)
    c_t16 = cosines(results[("glosses", "torch64")][:a.agree], ref32)
    c_vt = cosines(results[("glosses", "vela")][:a.agree],
                   results[("glosses", "torch64")][:a.agree])

    print()
    print(f"| {v.name} | workload | ms | sentences/s | tokens/s | vs torch fp16 bs 64 |")
    print("|---|---|---:|---:|---:|---:|")
    base = {w: next(r[2] for r in rows if r[0] == w and r[1] == "torch fp16, padded bs 64")
            for w in work}
    for w, system, sec, n, ntok in rows:
        print(f"| {system} | {w} | {sec * 1e3:.1f} | {n / sec:.0f} | {ntok / sec:.0f} | "
              f"{base[w] / sec:.2f}x |")
    print()
    print(f"| agreement on {len(g)} glosses (cosine) | min | mean |")
    print("|---|---:|---:|")
    print(f"| vela vs torch fp32 | {c_vela.min():.6f} | {c_vela.mean():.6f} |")
    print(f"| torch fp16 vs torch fp32 | {c_t16.min():.6f} | {c_t16.mean():.6f} |")
    print(f"| vela vs torch fp16 | {c_vt.min():.6f} | {c_vt.mean():.6f} |")
    for w in work:
        vbest = min(r[2] for r in rows if r[0] == w and r[1].startswith("vela"))
        tbest = min(r[2] for r in rows if r[0] == w and r[1].startswith("torch"))
        print(f"{w}: vela best {len(work[w]) / vbest:.0f} sentences/s vs torch fp16 best "
              f"{len(work[w]) / tbest:.0f}: {tbest / vbest:.2f}x")
    for b in berts.values():
        v.lib.gpu_bert_free(b)
    print(f"total {time.perf_counter() - t_start:.1f} s")
    ok = c_vela.min() >= 0.999
    print("agreement vela vs torch fp32 >= 0.999:", "ok" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
