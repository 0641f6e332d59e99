#!/usr/bin/env python3
"""Plots and markdown tables from bench/ann/ann.py's JSON (see its README).

  report.py plot  [--results DIR]   one PNG per (dataset, query set, threads):
                                    QPS (log) vs recall@10, every library
  report.py table [--results DIR]   markdown on stdout: per (dataset, query
                                    set, threads) QPS at recall@10 = 0.90 and
                                    0.95, vela / hnswlib and vela / best peer,
                                    build time and bytes per vector; then the
                                    LeanVec OOD comparison

QPS at a target recall: the configuration's Pareto frontier (points no other
point beats on both QPS and recall), interpolated linearly in log(QPS)
between the two frontier points that bracket the target; "not reached" when
no point reaches it; when the lowest-recall frontier point already exceeds
the target, that point's QPS (marked ">=").
"""
import argparse
import glob
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.abspath(os.path.join(HERE, "..", "results", "ann"))
TARGETS = (0.90, 0.95)


def load(results):
    """{dataset: [(library, config dict, versions)]}"""
    out = {}
    for p in sorted(glob.glob(os.path.join(results, "*", "*.json"))):
        with open(p) as f:
            r = json.load(f)
        for c in r["configs"]:
            out.setdefault(r["dataset"], []).append((r["library"], c, r.get("versions", {})))
    return out


def label(lib, c):
    return f"vela {c['config']}" if lib == "vela" else c["config"]


def curve(c, qset, threads):
    pts = [(p["recall"], p["qps"], p["param"]) for p in c["points"]
           if p["queries"] == qset and p["threads"] == threads]
    return sorted(pts)


def frontier(pts):
    front, best = [], -1.0
    for r, q, p in sorted(pts, key=lambda x: (-x[0], -x[1])):
        if q > best:
            front.append((r, q, p))
            best = q
    return sorted(front)


def qps_at(pts, target):
    """(qps, note) at the target recall, or (None, 'not reached')."""
    f = frontier(pts)
    if not f or f[-1][0] < target:
        return None, "not reached"
    if f[0][0] >= target:
        return f[0][1], ">="
    for (r0, q0, _), (r1, q1, _) in zip(f, f[1:]):
        if r0 < target <= r1:
            t = (target - r0) / (r1 - r0)
            return math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0))), ""
    return None, "not reached"


def qsets_threads(entries):
    qs, ts = [], []
    for _, c, _ in entries:
        for p in c.get("points", []):
            if p["queries"] not in qs:
                qs.append(p["queries"])
            if p["threads"] not in ts:
                ts.append(p["threads"])
    return qs, sorted(ts)


def plot(results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data = load(results)
    for ds, entries in data.items():
        qs, ts = qsets_threads(entries)
        for q in qs:
            for t in ts:
                fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=80)
                for lib, c, _ in entries:
                    pts = curve(c, q, t)
                    if not pts:
                        continue
                    r = [p[0] for p in pts]
                    v = [p[1] for p in pts]
                    style = "-o" if lib == "vela" else "--s"
                    ax.plot(r, v, style, ms=3, lw=1.3 if lib == "vela" else 1.0,
                            label=label(lib, c))
                ax.set_yscale("log")
                ax.set_xlabel("recall@10")
                ax.set_ylabel("queries/s (log)")
                ax.set_xlim(left=max(0.5, ax.get_xlim()[0]), right=1.0)
                ax.axvline(0.90, color="grey", lw=0.5, ls=":")
                ax.axvline(0.95, color="grey", lw=0.5, ls=":")
                ax.grid(True, which="both", lw=0.3, alpha=0.5)
                ax.set_title(f"{ds}, {q} queries, {t} search thread{'s' if t > 1 else ''}",
                             fontsize=10)
                ax.legend(fontsize=6.5, loc="lower left", ncol=2)
                fig.tight_layout()
                out = os.path.join(results, f"{ds}_{q}_t{t}.png")
                fig.savefig(out, dpi=80)
                plt.close(fig)
                print(f"{out} ({os.path.getsize(out) // 1024} KiB)")


def fmt_qps(v, note):
    if v is None:
        return note
    s = f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"
    return (">=" + s) if note == ">=" else s


def fmt_ratio(a, b):
    if a is None or b is None:
        return "–"
    return f"{a / b:.2f}x"


def table(results):
    data = load(results)
    print("Peer versions: " + ", ".join(sorted({f"{k} {v}" for _, _, vs in
                                                  (e for es in data.values() for e in es)
                                                  for k, v in vs.items() if k != "vela"})))
    for ds, entries in data.items():
        qs, ts = qsets_threads(entries)
        refused = [c for lib, c, _ in entries if c.get("refused")]
        for q in qs:
            for t in ts:
                print(f"\n#### {ds}, {q} queries, {t} search thread{'s' if t > 1 else ''}\n")
                print("| library / config | QPS @ 0.90 | QPS @ 0.95 | max recall | vs hnswlib "
                      "(0.90 / 0.95) | vs best peer (0.90 / 0.95) | build s (threads) | "
                      "bytes/vector |")
                print("|---|---|---|---|---|---|---|---|")
                rows = []
                for lib, c, _ in entries:
                    pts = curve(c, q, t)
                    if not pts:
                        continue
                    at = [qps_at(pts, x) for x in TARGETS]
                    rows.append((lib, c, at, max(p[0] for p in pts)))
                hn = next((r[2] for r in rows if r[0] == "hnswlib"), None)
                best = []
                for i in range(len(TARGETS)):
                    v = [r[2][i][0] for r in rows if r[0] != "vela" and r[2][i][0] is not None]
                    best.append(max(v) if v else None)
                for lib, c, at, mr in rows:
                    if lib == "vela":
                        vh = " / ".join(fmt_ratio(at[i][0], hn[i][0] if hn else None)
                                        for i in range(2))
                        vb = " / ".join(fmt_ratio(at[i][0], best[i]) for i in range(2))
                    else:
                        vh = vb = ""
                    bpv = c.get("bytes_per_vector")
                    if lib == "vela":
                        bpv_s = (f"{bpv:.0f} ({c['bytes_per_vector_vectors']} vectors + "
                                 f"{c['bytes_per_vector_graph']:.0f} graph)")
                    else:
                        bpv_s = f"{bpv:.0f}" if bpv is not None else "?"
                    print(f"| {label(lib, c)} | {fmt_qps(*at[0])} | {fmt_qps(*at[1])} | "
                          f"{mr:.3f} | {vh} | {vb} | {c['build_s']:.1f} ({c['build_threads']}) | "
                          f"{bpv_s} |")
        for c in refused:
            print(f"\n{ds}: {c['config']} did not run (exit {c['returncode']}): "
                  f"`{c['output'].splitlines()[-1] if c['output'] else ''}`")
        # LeanVec OOD comparison
        vela = {c["config"]: c for lib, c, _ in entries if lib == "vela"}
        kinds = [k for k in ("F32", "LVQ8", "LVQ4x8", "LeanVec4x8", "LeanVec4x8-OOD") if k in vela]
        if "LeanVec4x8-OOD" in vela:
            print(f"\n#### {ds}: vela compressions per query set (QPS @ 0.90 / @ 0.95)\n")
            print("| query set, threads | " + " | ".join(kinds) + " |")
            print("|---|" + "---|" * len(kinds))
            for q in qs:
                for t in ts:
                    cells = []
                    for k in kinds:
                        pts = curve(vela[k], q, t)
                        cells.append(" / ".join(fmt_qps(*qps_at(pts, x)) for x in TARGETS))
                    print(f"| {q}, {t} | " + " | ".join(cells) + " |")
            f32 = vela.get("F32")
            if f32:
                cells = [f"{vela[k]['bytes_per_vector']:.0f} B "
                         f"({vela[k]['bytes_per_vector'] / f32['bytes_per_vector']:.2f}x)"
                         for k in kinds]
                print("| vectors + graph per vector (vs F32 + graph) | " + " | ".join(cells) + " |")
                cells = [f"{vela[k]['build_s']:.0f} s + {vela[k]['train_encode_s']:.0f} s"
                         for k in kinds]
                print("| build + train/encode | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["plot", "table"])
    ap.add_argument("--results", default=RESULTS)
    a = ap.parse_args()
    (plot if a.cmd == "plot" else table)(a.results)


if __name__ == "__main__":
    sys.exit(main())
