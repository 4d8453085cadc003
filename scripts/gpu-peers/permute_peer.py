#!/usr/bin/env python3
"""PyTorch peer of the moe4j permute / combine kernels, next to a device-to-device copy of the
same bytes (the bandwidth ceiling) on the same GPU.

permute: stable expert-major gather of token rows (argsort + index_select);
combine: un-permute + weighted sum over k (fp32 accumulate).
Bandwidth counts bytes read + bytes written once each.

Usage: python3 scripts/gpu-peers/permute_peer.py [--out permute_peer.json]
"""
import argparse

import torch

from gpu_timing import device_info, emit, median_ms, require_cuda


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,16384")
    ap.add_argument("--hidden", type=int, default=7168)
    ap.add_argument("--experts", type=int, default=256)
    ap.add_argument("--topk", type=int, default=8)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--out")
    a = ap.parse_args()
    require_cuda()
    info = device_info()
    dt = getattr(torch, a.dtype)
    es = torch.tensor([], dtype=dt).element_size()
    rows = []
    for T in [int(t) for t in a.tokens.split(",")]:
        K, H = a.topk, a.hidden
        gen = torch.Generator(device="cuda").manual_seed(99 + T)
        sets = []
        for _ in range(2):
            x = torch.randn(T, H, device="cuda", generator=gen).to(dt)
            idx = torch.rand(T, a.experts, device="cuda", generator=gen).topk(K, dim=-1).indices.int()
            w = torch.rand(T, K, device="cuda", generator=gen)
            y = torch.randn(T * K, H, device="cuda", generator=gen).to(dt)
            sets.append((x, idx, w, y))
        params = {"tokens": T, "hidden": H, "topK": K, "dtype": a.dtype}

        def permute(p):
            x, idx, _, _ = p
            order = idx.view(-1).argsort(stable=True)
            return x.index_select(0, order // K)

        def combine(p):
            _, idx, w, y = p
            order = idx.view(-1).argsort(stable=True)
            yk = torch.empty_like(y)
            yk[order] = y
            return (yk.view(T, K, H).float() * w.unsqueeze(-1)).sum(dim=1).to(dt)

        copy_src = torch.randn(T * K, H, device="cuda", generator=gen).to(dt)
        copy_dst = torch.empty_like(copy_src)
        perm_bytes = 2 * T * K * H * es
        comb_bytes = T * K * H * es + T * H * es
        for name, fn, nbytes in (("torch_permute", permute, perm_bytes), ("torch_combine", combine, comb_bytes)):
            ms = median_ms(fn, sets, reps=a.reps)
            rows.append({"stage": name, "params": params, "ms": ms, "GBps": nbytes / ms / 1e6, **info})
        ms = median_ms(lambda _: copy_dst.copy_(copy_src), [0], reps=a.reps)
        rows.append({"stage": "d2d_copy", "params": params, "ms": ms, "GBps": perm_bytes / ms / 1e6, **info})
    emit(rows, a.out)


if __name__ == "__main__":
    main()
