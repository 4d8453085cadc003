"""Shared timing helpers for the PyTorch GPU peers (CUDA events, warm-up, median of many).

Each peer rotates among several freshly drawn input sets so that repeated runs do not measure
the L2 cache, synchronises before and after the timed region, and reports the median.
"""
import json
import statistics
import sys

import torch


def median_ms(fn, inputs, warmup=5, reps=50):
    """Median milliseconds of fn(inp) over reps runs, cycling through `inputs`, timed with CUDA events."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn(inputs[i % len(inputs)])
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def device_info():
    p = torch.cuda.get_device_properties(0)
    return {"device": p.name, "sms": p.multi_processor_count, "torch": torch.__version__,
            "cuda": torch.version.cuda}


def emit(rows, out_path):
    """Write JSON rows to out_path (or stdout) and print a short table to stderr."""
    text = json.dumps(rows, indent=1)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
    else:
        print(text)
    for r in rows:
        extra = " ".join(f"{k}={v}" for k, v in r.items() if k not in ("params", "device", "torch", "cuda", "sms"))
        print(f"{r.get('stage', '?'):<28} {json.dumps(r.get('params', {}))} {extra}", file=sys.stderr)


def require_cuda():
    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: GPU peers skipped", file=sys.stderr)
        sys.exit(0)
