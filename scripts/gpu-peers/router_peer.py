#!/usr/bin/env python3
"""PyTorch peer of the moe4j CUDA router (moe_router_fwd) on the same GPU.

Same routing as moe4j: sigmoid scores, expert bias for selection only, node-limited groups
(top-2-sum group score), top-k, weights normalised (+1e-20) and scaled, tokens-per-expert
histogram. Default: tokens 4096 and 16384, 256 experts, 8 groups / 4 limited, top-8, fp32 logits.

Usage: python3 scripts/gpu-peers/router_peer.py [--out router_peer.json] [--reps 100]
"""
import argparse

import torch

from gpu_timing import device_info, emit, median_ms, require_cuda


def route(logits, bias, groups, limited, top_k, norm=True, scale=2.5):
    T, E = logits.shape
    scores = torch.sigmoid(logits)
    choice = scores + bias
    if groups > 1 and limited < groups:
        g = choice.view(T, groups, E // groups)
        group_scores = g.topk(2, dim=-1).values.sum(dim=-1)
        keep = group_scores.topk(limited, dim=-1).indices
        mask = torch.ones(T, groups, dtype=torch.bool, device=logits.device)
        mask.scatter_(1, keep, False)
        choice = choice.masked_fill(mask.repeat_interleave(E // groups, dim=1), float("-inf"))
    idx = choice.topk(top_k, dim=-1).indices
    w = scores.gather(1, idx)
    if norm:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    w = w * scale
    counts = torch.bincount(idx.view(-1), minlength=E)
    return idx, w, counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,16384")
    ap.add_argument("--experts", type=int, default=256)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--limited", type=int, default=4)
    ap.add_argument("--topk", type=int, default=8)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--out")
    a = ap.parse_args()
    require_cuda()
    info = device_info()
    rows = []
    for T in [int(t) for t in a.tokens.split(",")]:
        gen = torch.Generator(device="cuda").manual_seed(1234 + T)
        inputs = [(torch.randn(T, a.experts, device="cuda", generator=gen),
                   0.01 * torch.randn(a.experts, device="cuda", generator=gen)) for _ in range(4)]
        ms = median_ms(lambda p: route(p[0], p[1], a.groups, a.limited, a.topk), inputs, reps=a.reps)
        rows.append({"stage": "torch_router_fwd", "params": {"tokens": T, "experts": a.experts,
                     "groups": a.groups, "limited": a.limited, "topK": a.topk}, "ms": ms, **info})
    emit(rows, a.out)


if __name__ == "__main__":
    main()
