#!/usr/bin/env python3
"""PyTorch peers of moe4j's JMH benchmarks, same workloads, same shapes, same thread count.

Each workload mirrors moe4j's semantics (torchtitan-style token-choice routing with node-limited
groups and expert bias; stable expert-major permutation; weighted combine in k order; SwiGLU experts
as one matmul per expert). Times are medians over repetitions after warm-up, in milliseconds.

Usage: /usr/bin/python3 scripts/bench/torch_peers.py --threads 2 --out peers.json [--device cpu|cuda]
Output: JSON list of {"stage", "params", "ms", "device", "torch"}.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def route(logits, bias, groups, limited, top_k, score_fn="sigmoid", norm=True, scale=1.0):
    """torchtitan-style routing: scores, biased choice, node-limited groups, top-k, weights, counts."""
    T, E = logits.shape
    scores = torch.sigmoid(logits) if score_fn == "sigmoid" else torch.softmax(logits, dim=-1)
    choice = scores + bias
    if groups > 1 and limited < groups:
        g = choice.view(T, groups, E // groups)
        group_scores = g.topk(2, dim=-1).values.sum(dim=-1)
        keep = group_scores.topk(limited, dim=-1).indices
        mask = torch.ones(T, groups, dtype=torch.bool, device=logits.device)
        mask.scatter_(1, keep, False)
        choice = choice.masked_fill(mask.repeat_interleave(E // groups, dim=1), float("-inf"))
    idx = choice.topk(top_k, dim=-1, sorted=False).indices
    w = scores.gather(1, idx)
    if norm:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    w = w * scale
    counts = torch.bincount(idx.view(-1), minlength=E)
    return idx, w, counts


def permute(x, idx, top_k):
    flat = idx.view(-1)
    order = flat.argsort(stable=True)
    return x.index_select(0, order // top_k), order


def combine(y_perm, order, w):
    T, K = w.shape
    y = torch.empty_like(y_perm)
    y[order] = y_perm
    return (y.view(T, K, -1) * w.unsqueeze(-1)).sum(dim=1)


def experts_swiglu(x_perm, counts, w1, w3, w2):
    outs = []
    start = 0
    for e, c in enumerate(counts.tolist()):
        xs = x_perm[start:start + c]
        start += c
        outs.append((F.silu(xs @ w1[e].t()) * (xs @ w3[e].t())) @ w2[e].t())
    return torch.cat(outs, dim=0)


def layer(x, gate, bias, w1, w3, w2, groups, limited, top_k):
    logits = x @ gate.t()
    idx, w, counts = route(logits, bias, groups, limited, top_k)
    x_perm, order = permute(x, idx, top_k)
    y_perm = experts_swiglu(x_perm, counts, w1, w3, w2)
    return combine(y_perm, order, w)


def timeit(fn, device, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = a.device
    results = []

    def record(stage, params, ms):
        results.append({"stage": stage, "params": params, "ms": ms, "device": dev, "torch": torch.__version__})
        print(f"{stage:24s} {json.dumps(params):70s} {ms:10.3f} ms", flush=True)

    # Router from logits: tokens x experts, node-limited groups, top-k (matches RouterBenchmark).
    router_shapes = [(4096, 256, 8, 4, 8), (16384, 256, 8, 4, 8), (16384, 64, 1, 1, 6)]
    if a.quick:
        router_shapes = router_shapes[:1]
    for T, E, G, L, K in router_shapes:
        logits = torch.randn(T, E, device=dev)
        bias = torch.randn(E, device=dev) * 0.01
        ms = timeit(lambda: route(logits, bias, G, L, K), dev, a.reps)
        record("router", {"tokens": T, "experts": E, "groups": G, "limitedGroups": L, "topK": K}, ms)

    # Dispatch + combine at W=1: permute rows into expert-major order, then weighted un-permute.
    for T, H, E, K in ([(4096, 1024, 64, 6)] if a.quick else [(4096, 1024, 64, 6), (16384, 1024, 64, 6)]):
        x = torch.randn(T, H, device=dev)
        idx = torch.randint(0, E, (T, K), device=dev)
        w = torch.rand(T, K, device=dev)

        def dc():
            xp, order = permute(x, idx, K)
            return combine(xp, order, w)
        ms = timeit(dc, dev, a.reps)
        record("dispatch+combine", {"tokens": T, "hidden": H, "experts": E, "topK": K}, ms)

    # Experts and the whole layer (forward; forward+backward).
    layer_shapes = [(2048, 512, 256, 16, 4, 1, 1)] if a.quick else [(2048, 512, 256, 16, 4, 1, 1), (4096, 1024, 512, 32, 4, 4, 2)]
    for T, H, FF, E, K, G, L in layer_shapes:
        x = torch.randn(T, H, device=dev)
        gate = torch.randn(E, H, device=dev) / H ** 0.5
        bias = torch.zeros(E, device=dev)
        w1 = torch.randn(E, FF, H, device=dev) / H ** 0.5
        w3 = torch.randn(E, FF, H, device=dev) / H ** 0.5
        w2 = torch.randn(E, H, FF, device=dev) / FF ** 0.5
        p = {"tokens": T, "hidden": H, "ffn": FF, "experts": E, "topK": K}
        idx, _, counts = route(x @ gate.t(), bias, G, L, K)
        xp, _ = permute(x, idx, K)
        ms = timeit(lambda: experts_swiglu(xp, counts, w1, w3, w2), dev, max(3, a.reps // 2))
        record("experts-forward", p, ms)
        ms = timeit(lambda: layer(x, gate, bias, w1, w3, w2, G, L, K), dev, max(3, a.reps // 2))
        record("layer-forward", p, ms)
        params = [t.requires_grad_() for t in (gate, w1, w3, w2)]
        xg = x.clone().requires_grad_()

        def fb():
            for t in params + [xg]:
                t.grad = None
            out = layer(xg, gate, bias, w1, w3, w2, G, L, K)
            out.backward(torch.ones_like(out))
        ms = timeit(fb, dev, max(3, a.reps // 2))
        record("layer-forward-backward", p, ms)
        for t in params:
            t.requires_grad_(False)

    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
