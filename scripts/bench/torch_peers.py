#!/usr/bin/env python3
"""PyTorch peers of moe4j's JMH benchmarks, same workloads, same shapes, same thread count.

Each workload mirrors moe4j's semantics (torchtitan-style token-choice routing with node-limited
groups and expert bias; stable expert-major permutation; weighted combine in k order; SwiGLU experts
as one matmul per expert). Times are medians over repetitions after warm-up, in milliseconds.

Usage:
  /usr/bin/python3 scripts/bench/torch_peers.py --threads 2 --out peers.json [--device cpu|cuda]
      [--shapes shapes.json] [--env-out env.json] [--check-blas] [--quick]

--shapes takes the list that `compare.py plan` writes from a JMH result file:
  [{"id": 0, "stage": "router", "params": {"tokens": 16384, "experts": 256, ...}}, ...]
so that every peer runs on exactly the shape moe4j ran. Without it a built-in default list runs.
Stages and the params each reads (defaults in brackets):
  router                  tokens experts topK groups[1] limitedGroups[groups] scoreFunction[sigmoid]
                          routeNorm[true] routeScale[1.0]       -- routing from given logits
  router-hidden           the same + hidden                    -- logits = x @ gate^T, then routing
  dispatch+combine        tokens hidden experts topK dtype[F32] topkPattern[random|consecutive]
                                                                -- permute, counts, weighted un-permute
  grouped-gemm            rows hidden ffn experts               -- out[g] = x[g] @ W[g], equal groups, fp32
  grouped-gemm-wgrad      rows hidden ffn experts               -- dW[g] = dOut[g]^T @ x[g]
  experts-forward         tokens hidden ffn experts topK        -- SwiGLU per expert over routed rows
  experts-forward-backward                                      -- the same with autograd backward
  layer-forward           tokens hidden ffn experts topK (+ routing params, sharedExperts[0] sharedFfn[ffn])
                          -- gate, route, permute, experts, combine (+ shared experts on every token)
  layer-forward-backward  the same with autograd backward (dX, dGate, dW1, dW3, dW2)
Output: JSON list of {"id", "stage", "params", "ms", "reps", "device", "torch"}.
--check-blas exits with status 3 and a message when torch does not call OpenBLAS (CPU only).
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


# ----------------------------------------------------------------------------------------- workloads

def route(logits, bias, groups, limited, top_k, score_fn="sigmoid", norm=True, scale=1.0):
    """torchtitan-style routing: scores, biased choice, node-limited groups, top-k, weights, counts."""
    T, E = logits.shape
    scores = torch.sigmoid(logits) if score_fn == "sigmoid" else torch.softmax(logits, dim=-1)
    choice = scores + bias
    if groups > 1 and limited < groups:
        g = choice.view(T, groups, E // groups)
        group_scores = g.topk(2, dim=-1).values.sum(dim=-1)
        keep = group_scores.topk(limited, dim=-1, sorted=False).indices
        mask = torch.ones_like(group_scores, dtype=torch.bool)
        mask.scatter_(1, keep, False)
        # broadcast the [T, G] mask over each group's experts (no [T, E] mask materialised), as torchtitan does
        choice = g.masked_fill(mask.unsqueeze(-1), float("-inf")).view(T, E)
    idx = choice.topk(top_k, dim=-1, sorted=False).indices
    w = scores.gather(1, idx)
    if norm:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    w = w * scale
    counts = torch.bincount(idx.view(-1), minlength=E)
    return idx, w, counts


def permute(x, idx, top_k):
    """Stable expert-major permutation of the (token, k) rows: rows of expert 0 first, token order inside."""
    flat = idx.view(-1)
    order = flat.argsort(stable=True)
    return x.index_select(0, order // top_k), order


def combine(y_perm, order, w):
    """out[t] = sum_k w[t,k] * y[t,k], accumulated in fp32 whatever the row dtype."""
    T, K = w.shape
    y = torch.empty_like(y_perm)
    y[order] = y_perm
    out = (y.view(T, K, -1).float() * w.unsqueeze(-1)).sum(dim=1)
    return out.to(y_perm.dtype)


def experts_swiglu(x_perm, counts, w1, w3, w2):
    outs = []
    start = 0
    for e, c in enumerate(counts.tolist()):
        xs = x_perm[start:start + c]
        start += c
        outs.append((F.silu(xs @ w1[e].t()) * (xs @ w3[e].t())) @ w2[e].t())
    return torch.cat(outs, dim=0)


def layer(x, gate, bias, w1, w3, w2, rp, top_k, shared=None):
    logits = x @ gate.t()
    idx, w, counts = route(logits, bias, rp["groups"], rp["limited"], top_k, rp["score"], rp["norm"], rp["scale"])
    x_perm, order = permute(x, idx, top_k)
    y_perm = experts_swiglu(x_perm, counts, w1, w3, w2)
    out = combine(y_perm, order, w)
    if shared is not None:  # dense SwiGLU on every token (DeepSeek shared experts, fused into one wide FFN)
        s1, s3, s2 = shared
        out = out + (F.silu(x @ s1.t()) * (x @ s3.t())) @ s2.t()
    return out


# ------------------------------------------------------------------------------------------- timing

def timeit(fn, device, reps, warmup=2, budget_s=None):
    """Median milliseconds of fn() over reps runs after warmup runs; stops early (>= 3 runs) past budget_s."""
    for _ in range(warmup):
        fn()
    times = []
    begin = time.perf_counter()
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
        if budget_s is not None and len(times) >= 3 and time.perf_counter() - begin > budget_s:
            break
    return statistics.median(times), len(times)


# ------------------------------------------------------------------------------------------- stages

def routing_params(p):
    groups = int(p.get("groups", 1))
    return {
        "groups": groups,
        "limited": int(p.get("limitedGroups", groups)),
        "score": str(p.get("scoreFunction", "sigmoid")).lower(),
        "norm": str(p.get("routeNorm", "true")).lower() == "true",
        "scale": float(p.get("routeScale", 1.0)),
    }


def run_stage(stage, p, dev, reps, budget_s):
    """Builds the inputs of one workload and times it; returns (median ms, reps run)."""
    if stage in ("router", "router-hidden"):
        T, E, K = int(p["tokens"]), int(p["experts"]), int(p["topK"])
        rp = routing_params(p)
        bias = torch.randn(E, device=dev) * 0.01
        if stage == "router":
            logits = torch.randn(T, E, device=dev)
            return timeit(lambda: route(logits, bias, rp["groups"], rp["limited"], K, rp["score"], rp["norm"],
                                        rp["scale"]), dev, reps, budget_s=budget_s)
        H = int(p["hidden"])
        x = torch.randn(T, H, device=dev)
        gate = torch.randn(E, H, device=dev) / H ** 0.5
        return timeit(lambda: route(x @ gate.t(), bias, rp["groups"], rp["limited"], K, rp["score"], rp["norm"],
                                    rp["scale"]), dev, reps, budget_s=budget_s)
    if stage in ("grouped-gemm", "grouped-gemm-wgrad"):
        R, H, FF, E = int(p["rows"]), int(p["hidden"]), int(p["ffn"]), int(p["experts"])
        off = [R * g // E for g in range(E + 1)]  # equal groups, as ExpertsBenchmark splits them
        x = torch.randn(R, H, device=dev)
        if stage == "grouped-gemm":
            w = torch.randn(E, H, FF, device=dev)
            out = torch.empty(R, FF, device=dev)

            def gg():
                for g in range(E):
                    torch.mm(x[off[g]:off[g + 1]], w[g], out=out[off[g]:off[g + 1]])
            return timeit(gg, dev, reps, budget_s=budget_s)
        d_out = torch.randn(R, FF, device=dev)
        dw = torch.empty(E, FF, H, device=dev)

        def wg():
            for g in range(E):
                torch.mm(d_out[off[g]:off[g + 1]].t(), x[off[g]:off[g + 1]], out=dw[g])
        return timeit(wg, dev, reps, budget_s=budget_s)
    T, E, K = int(p["tokens"]), int(p["experts"]), int(p["topK"])
    rp = routing_params(p)
    H = int(p["hidden"])
    if stage == "dispatch+combine":
        dtype = DTYPES[str(p.get("dtype", "F32")).upper()]
        x = torch.randn(T, H, device=dev).to(dtype)
        if p.get("topkPattern") == "consecutive":  # token t -> experts first_t, first_t + 1, ... (mod E)
            idx = (torch.randint(0, E, (T, 1), device=dev) + torch.arange(K, device=dev)) % E
        else:
            idx = torch.randint(0, E, (T, K), device=dev)
        w = torch.rand(T, K, device=dev)

        def dc():
            xp, order = permute(x, idx, K)
            torch.bincount(idx.view(-1), minlength=E)  # tokens per expert, which moe4j's layout also yields
            return combine(xp, order, w)
        return timeit(dc, dev, reps, budget_s=budget_s)
    FF = int(p["ffn"])
    x = torch.randn(T, H, device=dev)
    gate = torch.randn(E, H, device=dev) / H ** 0.5
    bias = torch.zeros(E, device=dev)
    w1 = torch.randn(E, FF, H, device=dev) / H ** 0.5
    w3 = torch.randn(E, FF, H, device=dev) / H ** 0.5
    w2 = torch.randn(E, H, FF, device=dev) / FF ** 0.5
    if stage in ("experts-forward", "experts-forward-backward"):
        idx, _, counts = route(x @ gate.t(), bias, rp["groups"], rp["limited"], K, rp["score"])
        xp, _ = permute(x, idx, K)
        if stage == "experts-forward":
            return timeit(lambda: experts_swiglu(xp, counts, w1, w3, w2), dev, reps, budget_s=budget_s)
        ws = [t.requires_grad_() for t in (w1, w3, w2)]
        xg = xp.clone().requires_grad_()

        def efb():
            for t in ws + [xg]:
                t.grad = None
            y = experts_swiglu(xg, counts, *ws)
            y.backward(torch.ones_like(y))
        return timeit(efb, dev, reps, budget_s=budget_s)
    shared = None
    n_shared = int(p.get("sharedExperts", 0))
    if n_shared > 0:
        SF = n_shared * int(p.get("sharedFfn", FF))
        shared = (torch.randn(SF, H, device=dev) / H ** 0.5, torch.randn(SF, H, device=dev) / H ** 0.5,
                  torch.randn(H, SF, device=dev) / SF ** 0.5)
    if stage == "layer-forward":
        return timeit(lambda: layer(x, gate, bias, w1, w3, w2, rp, K, shared), dev, reps, budget_s=budget_s)
    if stage == "layer-forward-backward":
        params = [t.requires_grad_() for t in (gate, w1, w3, w2) + (shared or ())]
        xg = x.clone().requires_grad_()

        def fb():
            for t in params + [xg]:
                t.grad = None
            out = layer(xg, gate, bias, w1, w3, w2, rp, K, shared)
            out.backward(torch.ones_like(out))
        return timeit(fb, dev, reps, budget_s=budget_s)
    raise ValueError(f"unknown stage '{stage}' (known: router, router-hidden, dispatch+combine, grouped-gemm, "
                     "grouped-gemm-wgrad, experts-forward, "
                     "experts-forward-backward, layer-forward, layer-forward-backward)")


def default_shapes(quick):
    """Shapes run when no --shapes file is given (standalone use)."""
    shapes = []
    for T, E, G, L, K in [(4096, 256, 8, 4, 8), (16384, 256, 8, 4, 8), (16384, 64, 1, 1, 6)][:1 if quick else 3]:
        shapes.append(("router", {"tokens": T, "experts": E, "groups": G, "limitedGroups": L, "topK": K}))
    for T, H, E, K in [(4096, 1024, 64, 6), (16384, 1024, 64, 6)][:1 if quick else 2]:
        shapes.append(("dispatch+combine", {"tokens": T, "hidden": H, "experts": E, "topK": K}))
    for T, H, FF, E, K, G, L in [(2048, 512, 256, 16, 4, 1, 1), (4096, 1024, 512, 32, 4, 4, 2)][:1 if quick else 2]:
        p = {"tokens": T, "hidden": H, "ffn": FF, "experts": E, "topK": K, "groups": G, "limitedGroups": L}
        for s in ("experts-forward", "layer-forward", "layer-forward-backward"):
            shapes.append((s, p))
    return [{"id": i, "stage": s, "params": p} for i, (s, p) in enumerate(shapes)]


# ------------------------------------------------------------------------------------------- BLAS check

def blas_info(threads):
    """Which BLAS library torch has mapped after a matmul, and a quick sgemm rate with `threads` threads."""
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                name = os.path.basename(path).lower()
                if "blas" in name or "mkl" in name:
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    alt = "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"
    reps, t = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t < 0.5:
        a @ b
        reps += 1
    gflops = 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9
    return {"libraries": sorted(libs), "alternative": os.path.realpath(alt) if os.path.exists(alt) else None,
            "openblas": any("openblas" in x.lower() for x in libs), "sgemm_gflops": round(gflops, 1),
            "sgemm_n": n, "threads": threads}


def env_info(dev, threads, blas):
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": dev, "threads": threads,
            "blas": blas, "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    if dev == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = p.name
        info["cuda"] = torch.version.cuda
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--budget", type=float, default=10.0, help="seconds per shape after which timing stops (>= 3 reps)")
    ap.add_argument("--out", help="result JSON (required unless only --check-blas/--env-out is wanted)")
    ap.add_argument("--shapes", help="JSON list of {id, stage, params} to run (from compare.py plan)")
    ap.add_argument("--env-out", help="write torch version, BLAS library and sgemm probe here")
    ap.add_argument("--check-blas", action="store_true", help="refuse (exit 3) unless torch calls OpenBLAS")
    ap.add_argument("--quick", action="store_true", help="smaller default shapes (smoke run)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = a.device
    blas = blas_info(a.threads) if dev == "cpu" else None
    if blas is not None:
        print(f"BLAS: {', '.join(blas['libraries']) or 'none found'}; sgemm {blas['sgemm_n']}^3 at {a.threads} "
              f"threads: {blas['sgemm_gflops']} GFLOP/s", flush=True)
        if a.check_blas and not blas["openblas"]:
            print("torch_peers: refusing to measure: torch does not call OpenBLAS "
                  f"(BLAS libraries mapped: {blas['libraries'] or 'none'}; /etc/alternatives/libblas.so.3 -> "
                  f"{blas['alternative']}). Debian's torch then falls back to the reference BLAS (~30-60x slower "
                  "sgemm) and the comparison is meaningless. Install it: sudo apt-get install libopenblas0-pthread",
                  file=sys.stderr)
            sys.exit(3)
    if a.env_out:
        with open(a.env_out, "w") as f:
            json.dump(env_info(dev, a.threads, blas), f, indent=1)
    if a.out is None:
        if not (a.check_blas or a.env_out):
            ap.error("--out is required")
        return
    if a.shapes:
        with open(a.shapes) as f:
            shapes = json.load(f)
    else:
        shapes = default_shapes(a.quick)
    results = []
    for s in shapes:
        ms, n = run_stage(s["stage"], s["params"], dev, a.reps, a.budget)
        results.append({"id": s["id"], "stage": s["stage"], "params": s["params"], "ms": ms, "reps": n,
                        "device": dev, "torch": torch.__version__})
        print(f"{s['stage']:24s} {json.dumps(s['params']):90s} {ms:10.3f} ms", flush=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
