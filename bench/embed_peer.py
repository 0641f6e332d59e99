#!/usr/bin/env python3
"""onnxruntime peer for bench_embed_bench: the same all-MiniLM-L6-v2 weights
(models/all-MiniLM-L6-v2, from `make models`) exported to ONNX with mean
pooling and L2 normalisation inside the graph, run by onnxruntime's CPU
provider on the same texts, batch sizes and thread count. Timed end to end
like vela: HF `tokenizers` (fast, Rust) tokenizing with truncation at 256 and
padding to the longest text of each batch, then one session.run per batch.

The ONNX file is exported once (needs torch + transformers) and cached beside
the weights (models/ is git-ignored). --optimize runs onnxruntime's own BERT
graph optimizer (attention, LayerNorm and GELU fusion) on it first; the
figure reported in BENCHMARKS.md is the faster of the two graphs.

Scratch virtualenv (never the project's own):
  python3 -m venv /tmp/embvenv
  /tmp/embvenv/bin/pip install onnxruntime tokenizers torch transformers onnx numpy
Usage:
  build/release/bench_embed_bench --dump /tmp/glosses.txt      # the texts vela used
  /tmp/embvenv/bin/python bench/embed_peer.py --texts /tmp/glosses.txt --threads 1 [--optimize]
"""
import argparse
import os
import sys
import time

MAX_SEQ = 256


def export(model_dir, path):
    import torch
    from transformers import BertModel

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = BertModel.from_pretrained(model_dir, add_pooling_layer=False,
                                                  attn_implementation="eager")

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, p=2.0, dim=1)

    enc = Encoder().eval()
    ids = torch.ones((2, 8), dtype=torch.int64)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(enc, (ids, ids, torch.zeros_like(ids)), path,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "b", 1: "t"},
                                        "attention_mask": {0: "b", 1: "t"},
                                        "token_type_ids": {0: "b", 1: "t"},
                                        "embedding": {0: "b"}})


def optimize(path, out):
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(path, model_type="bert", num_heads=12, hidden_size=384,
                                   opt_level=1)
    opt.save_model_to_file(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--texts", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--optimize", action="store_true")
    ap.add_argument("--sort", action="store_true",
                    help="batch texts in order of length (sentence-transformers does), "
                         "so padding to the longest of a batch costs little")
    a = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    path = os.path.join(a.model, "onnx", "model.onnx")
    if not os.path.exists(path):
        export(a.model, path)
    if a.optimize:
        opt = os.path.join(a.model, "onnx", "model_bert_opt.onnx")
        if not os.path.exists(opt):
            optimize(path, opt)
        path = opt

    texts = [l.rstrip("\n") for l in open(a.texts, encoding="utf-8")]
    if a.sort:
        texts.sort(key=len)
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    tok.enable_truncation(max_length=MAX_SEQ)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest of the batch

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def run(batch):
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            enc = tok.encode_batch(texts[i:i + batch])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            sess.run(None, {"input_ids": ids, "attention_mask": mask,
                            "token_type_ids": np.zeros_like(ids)})
        return time.perf_counter() - t0

    tok.no_padding()
    ntok = sum(len(e.ids) for e in tok.encode_batch(texts))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    print(f"embed_peer: onnxruntime {ort.__version__} graph={os.path.basename(path)} "
          f"threads={a.threads} texts={len(texts)}{' sorted' if a.sort else ''} tokens={ntok} "
          f"({ntok / len(texts):.1f} per text)")
    print(f"{'batch':>8} {'sentences/s':>14} {'tokens/s':>14} {'ms/batch':>12}")
    for b in [int(x) for x in a.batches.split(",") if x]:
        run(b)  # warm-up
        best = min(run(b) for _ in range(a.reps))
        print(f"{b:8d} {len(texts) / best:14.1f} {ntok / best:14.0f} "
              f"{best * 1e3 / -(-len(texts) // b):12.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
