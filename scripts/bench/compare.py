#!/usr/bin/env python3
"""moe4j vs PyTorch: turns JMH results into PyTorch peer shapes, and both into docs/benchmarks.md.

Called by scripts/bench/compare.sh; two subcommands:
  plan   --jmh jmh.json --out shapes.json
         Reads JMH's JSON result file and writes the list of PyTorch peer workloads (stage + params) with
         exactly the shapes moe4j ran, for torch_peers.py --shapes.
  render --run DIR --out docs/benchmarks.md --command "..." [--gpu-results PATH] [--mode quick|full]
         Reads DIR/{jmh.json, peers.json, torch-env.json, run.json} and writes the markdown report: one table
         per stage (shape, moe4j, PyTorch, speedup = PyTorch time / moe4j time, target, met), the machine,
         the date and the command. A hand-written block between the NOTES markers of the existing output
         file is kept across runs (that is where the reasons for missed targets go).

Which JMH benchmark is which stage is decided by STAGE_RULES below (benchmark class and method names);
JMH @Param names are normalised through PARAM_ALIASES so that torch_peers.py sees one vocabulary.
Standard library only (runs with any python3).
"""
import argparse
import datetime
import glob
import json
import os
import re
import sys

NOTES_BEGIN = "<!-- notes:begin (kept across runs; edit freely) -->"
NOTES_END = "<!-- notes:end -->"


class Stage:
    def __init__(self, key, cls, title, target, what, optional=False):
        self.key, self.cls, self.title, self.target, self.what = key, cls, title, target, what
        self.optional = optional  # left out of the report when no benchmark feeds it


# Report order, targets from issue 10 (speedup = PyTorch ms / moe4j ms; None = no target, shown for information).
STAGES = [
    Stage("router", "RouterBenchmark", "Router from logits", 5.0,
          "scores, expert bias, node-limited group mask, top-k, weights and tokens per expert from given "
          "logits. PyTorch: the same steps as separate tensor ops (torchtitan style)."),
    Stage("router-hidden", "RouterBenchmark", "Router from hidden states", None,
          "gate GEMM `x · Wgᵀ` plus the routing above. PyTorch: `x @ gate.t()` (OpenBLAS) then the same ops."),
    Stage("dispatch+combine", "DispatchBenchmark", "Dispatch + combine (one rank)", 1.0,
          "layout (tokens per expert), stable expert-major permutation of the token rows, then the weighted "
          "un-permute `out[t] = Σ_k w[t,k]·y[t,k]`. PyTorch: bincount, stable argsort, index_select, scatter, "
          "weighted sum. Rows with W > 1 or the memory-copy baseline have no PyTorch peer."),
    Stage("grouped-gemm", "ExpertsBenchmark", "Experts: grouped GEMM forward", None,
          "`out[g] = x[g] · W[g]` over `experts` contiguous equal groups of `rows` rows, `[hidden] → [ffn]` "
          "(one expert projection). PyTorch: one `torch.mm` per group into a preallocated output (OpenBLAS "
          "sgemm). For `BF16` rows moe4j rounds operands to bf16 and accumulates in fp32; the PyTorch peer stays "
          "fp32, its fastest CPU path (its bf16 GEMM is slower on this CPU)."),
    Stage("grouped-gemm-wgrad", "ExpertsBenchmark", "Experts: grouped GEMM weight gradient", None,
          "`dW[g] = dOut[g]ᵀ · x[g]` per group (the expert weight gradient). PyTorch: one `torch.mm` per group "
          "into a preallocated `dW`."),
    Stage("experts-forward", "ExpertsBenchmark", "Experts forward (grouped SwiGLU)", None,
          "`y = (silu(x·W1ᵀ) ⊙ (x·W3ᵀ))·W2ᵀ` over the contiguous expert groups. PyTorch: one matmul per expert "
          "and projection (OpenBLAS).", optional=True),
    Stage("experts-forward-backward", "ExpertsBenchmark", "Experts forward + backward", None,
          "the grouped SwiGLU forward plus dX, dW1, dW3, dW2. PyTorch: autograd through the per-expert loop.",
          optional=True),
    Stage("layer-forward", "MoeLayerBenchmark", "MoE layer forward", None,
          "gate GEMM, routing, dispatch, experts, combine. PyTorch: the same pipeline in eager mode."),
    Stage("layer-forward-backward", "MoeLayerBenchmark", "MoE layer forward + backward", 0.8,
          "the layer forward plus the whole backward (dX, gate and expert weight gradients). PyTorch: "
          "autograd."),
]
STAGE_BY_KEY = {s.key: s for s in STAGES}


PARAM_ALIASES = {
    "t": "tokens", "numtokens": "tokens", "tokens": "tokens", "seqlen": "tokens",
    "e": "experts", "numexperts": "experts", "experts": "experts", "nexperts": "experts",
    "k": "topK", "topk": "topK",
    "h": "hidden", "hidden": "hidden", "hiddensize": "hidden", "dim": "hidden",
    "ffn": "ffn", "f": "ffn", "ffnhidden": "ffn", "intermediate": "ffn", "moeintermediatesize": "ffn",
    "groups": "groups", "expertgroups": "groups", "ngroups": "groups",
    "limitedgroups": "limitedGroups", "limited": "limitedGroups", "topkgroups": "limitedGroups",
    "world": "world", "worldsize": "world", "w": "world", "ranks": "world", "ep": "world",
    "dtype": "dtype", "expertdtype": "dtype", "compute": "dtype",
    "rows": "rows", "m": "rows",
    "scorefunction": "scoreFunction", "score": "scoreFunction",
    "routenorm": "routeNorm", "routescale": "routeScale",
    "sharedexperts": "sharedExperts", "shared": "sharedExperts", "sharedffn": "sharedFfn",
}
# What a benchmark class hard-codes (not a @Param) that its PyTorch peer must also do.
FIXED_PEER_PARAMS = {
    "RouterBenchmark": {"scoreFunction": "sigmoid", "routeNorm": "true", "routeScale": 2.5},
    "DispatchBenchmark": {"topkPattern": "consecutive"},
    "MoeLayerBenchmark": {"scoreFunction": "sigmoid", "routeNorm": "true", "routeScale": 1.0},
}
# JMH params that select a variant or a thread count, not a shape: never passed to the peer.
NOT_PEER_PARAMS = {"input", "from", "source", "threads", "strategy"}
SHAPE_ORDER = ["rows", "tokens", "hidden", "ffn", "experts", "topK", "groups", "world", "dtype", "scoreFunction"]
SHAPE_SHORT = {"rows": "rows=", "tokens": "T", "hidden": "H", "ffn": "F", "experts": "E", "topK": "K", "world": "W",
               "dtype": "", "scoreFunction": ""}


def _num(v):
    if isinstance(v, (int, float)):
        return v
    s = str(v).strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    if re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", s, re.I):
        return float(s)
    return s


def normalise_params(params):
    """JMH @Param values (strings) -> peer vocabulary; a groups value like '8/4', '8of4', '8-4' or 'none' splits."""
    out = {}
    for name, value in (params or {}).items():
        key = PARAM_ALIASES.get(name.lower(), name)
        out[key] = _num(value)
    g = out.get("groups")
    if isinstance(g, str):
        m = re.fullmatch(r"(\d+)\s*(?:/|of|-|x|:)\s*(\d+)", g, re.I)
        if m:
            out["groups"], out["limitedGroups"] = int(m.group(1)), int(m.group(2))
        elif g.lower() in ("none", "off", "no", "1"):
            out["groups"], out["limitedGroups"] = 1, 1
    if "groups" in out and "limitedGroups" not in out:
        out["limitedGroups"] = out["groups"]
    return out


def classify(benchmark, params):
    """(stage key, has PyTorch peer, variant label) for one JMH benchmark name + normalised params."""
    cls, _, method = benchmark.rpartition(".")
    cls = cls.rpartition(".")[2]
    m = method.lower()
    variant = "" if m in ("run", "measure", "bench", "benchmark") else method
    if cls == "RouterBenchmark":
        src = str(params.get("input", params.get("from", params.get("source", "")))).lower()
        hidden = "hidden" in m or "gate" in m or src.startswith("hidden") or src == "x"
        if "backward" in m:
            return ("router-hidden" if hidden else "router"), False, method
        return ("router-hidden" if hidden else "router"), True, variant
    if cls == "DispatchBenchmark":
        if "copy" in m or "memcpy" in m or "baseline" in m:
            return "dispatch+combine", False, method
        world = params.get("world", 1)
        both = ("combine" in m and ("dispatch" in m or "permute" in m)) or m in ("roundtrip", "round_trip", "run")
        return "dispatch+combine", bool(both and world == 1), method
    if cls == "ExpertsBenchmark":
        if "swiglu" in m or "experts" in m:
            return ("experts-forward-backward" if "backward" in m else "experts-forward"), True, variant
        if "grad" in m or "backward" in m:
            return "grouped-gemm-wgrad", "weight" in m or m == "backward", method
        return "grouped-gemm", True, method
    if cls == "MoeLayerBenchmark":
        key = "layer-forward-backward" if "backward" in m else "layer-forward"
        return key, params.get("world", 1) == 1, variant
    return None, False, method


def shape_label(params):
    p = {k: v for k, v in params.items() if k not in ("threads", "source", "input", "from")}
    parts = []
    for k in SHAPE_ORDER:
        if k not in p:
            continue
        v = p.pop(k)
        if k == "groups":
            lim = p.pop("limitedGroups", v)
            parts.append("no groups" if v in (1, 0) else f"G={v}/{lim}")
        else:
            short = SHAPE_SHORT[k]
            parts.append(f"{short}{v}" if short.endswith("=") else f"{short}={v}" if short else str(v))
    p.pop("limitedGroups", None)
    parts += [f"{k}={v}" for k, v in sorted(p.items())]
    return " ".join(parts)


def shape_key(params):
    """Sort key: the shape parameters in SHAPE_ORDER, numbers numerically, then everything else."""
    key = []
    for k in SHAPE_ORDER + sorted(set(params) - set(SHAPE_ORDER)):
        v = params.get(k)
        key.append((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)))
    return key


def to_ms(score, unit):
    """A JMH primary score in its unit -> milliseconds per operation."""
    per_op = {"ns/op": 1e-6, "us/op": 1e-3, "ms/op": 1.0, "s/op": 1e3, "min/op": 6e4}
    per_time = {"ops/ns": 1e-6, "ops/us": 1e-3, "ops/ms": 1.0, "ops/s": 1e3, "ops/min": 6e4}
    if unit in per_op:
        return score * per_op[unit]
    if unit in per_time and score > 0:
        return per_time[unit] / score
    raise ValueError(f"JMH score unit '{unit}' is not a time per operation or operations per time")


def load_json(path, default=None):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return default


def peer_key(stage, params):
    return stage + " " + json.dumps(params, sort_keys=True)


def jmh_rows(jmh):
    """JMH result entries -> dicts with stage, peer flag, params, ms, error ms."""
    rows = []
    for r in jmh or []:
        params = normalise_params(r.get("params"))
        stage, peer, variant = classify(r["benchmark"], params)
        if stage == "router":
            params.pop("hidden", None)  # routing from logits never reads it
        pm = r["primaryMetric"]
        ms = to_ms(pm["score"], pm["scoreUnit"])
        err = pm.get("scoreError")
        err_ms = None
        if isinstance(err, (int, float)) and err == err:  # NaN when too few iterations
            err_ms = abs(to_ms(pm["score"] + err, pm["scoreUnit"]) - ms) if pm["scoreUnit"].startswith("ops") \
                else to_ms(err, pm["scoreUnit"])
        cls = r["benchmark"].rpartition(".")[0].rpartition(".")[2]
        peer_params = {k: v for k, v in params.items() if k not in NOT_PEER_PARAMS}
        peer_params.update(FIXED_PEER_PARAMS.get(cls, {}))
        rows.append({"benchmark": r["benchmark"], "stage": stage, "peer": peer, "variant": variant,
                     "params": params, "peer_params": peer_params, "ms": ms, "err_ms": err_ms})
    return rows


def cmd_plan(a):
    rows = jmh_rows(load_json(a.jmh, []))
    seen, shapes = set(), []
    for r in rows:
        if not r["peer"]:
            continue
        k = peer_key(r["stage"], r["peer_params"])
        if k not in seen:
            seen.add(k)
            shapes.append({"id": len(shapes), "stage": r["stage"], "params": r["peer_params"]})
    with open(a.out, "w") as f:
        json.dump(shapes, f, indent=1)
    print(f"compare.py: {len(shapes)} PyTorch peer workloads from {len(rows)} JMH results -> {a.out}")


# ------------------------------------------------------------------------------------------- render

def fmt_ms(ms, err=None):
    if ms is None:
        return "—"
    s = f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"
    if err is not None and ms > 0:
        s += f" ± {100 * err / ms:.0f}%"
    return s


def machine_section(env, torch_env, run):
    cpu, cores = "unknown", os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = (torch_env or {}).get("blas") or {}
    lines = ["| | |", "| --- | --- |",
             f"| mode | {run.get('mode', '?')} |",
             f"| CPU | {run.get('cpu', cpu)} ({run.get('cores', cores)} logical cores visible) |",
             f"| threads | {run.get('threads', '?')} for both: moe4j `-Dmoe4j.threads` (and `-p threads`), PyTorch "
             f"`torch.set_num_threads` with {' '.join(f'`{k}={v}`' for k, v in ((torch_env or {}).get('env') or {}).items()) or 'no thread variables set'} |",
             f"| JDK | {env.get('jdk', '?')} |",
             f"| PyTorch | {(torch_env or {}).get('torch', '?')} (Python {(torch_env or {}).get('python', '?')}) |",
             f"| BLAS used by PyTorch | {', '.join(blas.get('libraries') or []) or '?'} — sgemm "
             f"{blas.get('sgemm_n', '?')}³: {blas.get('sgemm_gflops', '?')} GFLOP/s at {blas.get('threads', '?')} "
             "threads |",
             f"| load average before the run | {run.get('loadavg', '?')} (1 min) |",
             f"| moe4j commit | {run.get('commit', '?')} |",
             f"| date | {run.get('date', '?')} |",
             f"| JMH | {env.get('jmh', '?')} |"]
    return lines


def stage_tables(rows, peers, selected, cpu=True):
    """Markdown lines: one table per stage with measurements, and the targets summary.

    cpu=False (GPU results): no targets (issue 10's targets are for the 2-core CPU), no stage descriptions,
    stages without results left out."""
    by_id = {peer_key(p["stage"], p["params"]): p for p in peers or []}
    out, summary = [], []
    for st in STAGES:
        srows = [r for r in rows if r["stage"] == st.key]
        if not srows and (not cpu or st.optional):
            continue
        target = st.target if cpu else None
        out.append(f"### {st.title}")
        out.append("")
        if cpu:
            out += [st.what, ""]
        if not srows:
            if selected is not None and st.cls not in selected[0]:
                why = f"{st.cls} not selected in this run (`--stages`)"
            elif selected is not None and st.cls not in selected[1]:
                why = f"{st.cls} is not in moe.jar yet"
            else:
                why = f"no JMH result from {st.cls} (absent from moe.jar, not merged yet, or failed)"
            out.append(f"_No measurement: {why}._")
            out.append("")
            continue
        tgt = f"≥ {target:g}×" if target else "—"
        out.append("| shape | variant | moe4j ms | PyTorch ms | speedup | target | met |")
        out.append("| --- | --- | ---: | ---: | ---: | --- | --- |")
        ratios = []
        for r in sorted(srows, key=lambda r: (not r["peer"], shape_key(r["params"]), r["variant"])):
            p = by_id.get(peer_key(r["stage"], r["peer_params"])) if r["peer"] else None
            ratio = p["ms"] / r["ms"] if p and r["ms"] > 0 else None
            met = "—"
            if ratio is not None and target:
                met = "met" if ratio >= target else "**not met**"
                ratios.append(ratio)
            out.append(f"| {shape_label(r['params'])} | {r['variant'] or ''} | {fmt_ms(r['ms'], r['err_ms'])} | "
                       f"{fmt_ms(p['ms']) if p else '—'} | {f'{ratio:.2f}×' if ratio is not None else '—'} | "
                       f"{tgt if r['peer'] else '—'} | {met} |")
        out.append("")
        if target:
            if ratios:
                ok = sum(1 for x in ratios if x >= st.target)
                summary.append(f"| {st.title} | ≥ {st.target:g}× | {min(ratios):.2f}× – {max(ratios):.2f}× | "
                               f"{'met' if ok == len(ratios) else f'**not met** ({ok} of {len(ratios)} shapes)'} |")
            else:
                summary.append(f"| {st.title} | ≥ {st.target:g}× | — | not measured |")
    head = ["| stage | target | speedup range | verdict |", "| --- | --- | --- | --- |"] + summary
    return head, out


def parse_jmh_text(text):
    """JMH's printed summary tables (as in a log) -> entries shaped like its JSON results.

    Columns are found from the header line: JMH right-aligns every column under its header name, except the
    first (benchmark) and the last (units)."""
    out, lines = [], text.splitlines()
    for i, head in enumerate(lines):
        if not re.match(r"^Benchmark\s.*\sMode\s+Cnt\s+Score\s+Error\s+Units\s*$", head):
            continue
        cols = [(m.group(0), m.end()) for m in re.finditer(r"\S+", head)]
        names = [c[0] for c in cols]
        for row in lines[i + 1:]:
            if not row.strip() or len(row) < cols[-2][1]:
                break
            name = row.split()[0]
            vals, prev = {}, len(name)
            for col, end in cols[1:-1]:
                vals[col] = row[prev:end].strip()
                prev = end
            unit = row[prev:].strip()
            try:
                score = float(vals["Score"])
            except (KeyError, ValueError):
                break
            err = vals.get("Error", "").lstrip("±").strip()
            params = {n[1:-1]: vals[n] for n in names if n.startswith("(") and n.endswith(")")}
            out.append({"benchmark": name, "mode": vals.get("Mode"), "params": params,
                        "primaryMetric": {"score": score, "scoreError": float(err) if err else None,
                                          "scoreUnit": unit}})
    return out


def json_lists_in_text(text):
    """Every JSON list printed on its own lines ('[' ... ']') inside a log."""
    found, buf = [], None
    for line in text.splitlines():
        if buf is None and line.strip() == "[":
            buf = [line]
        elif buf is not None:
            buf.append(line)
            if line.strip() == "]":
                try:
                    found.append(json.loads("\n".join(buf)))
                except ValueError:
                    pass
                buf = None
    return found


def gpu_section(path):
    lines = ["## GPU", ""]
    how = ("Give a GPU run's result file or directory with `--gpu-results` (e.g. "
           "`scripts/bench/compare.sh --render-only build/bench/<run> --gpu-results <dir>`). Every `*.json` "
           "there is read, and every `*.log`/`*.txt` (the bundle's `bench.log`): JMH results (`-rf json` files, "
           "or the summary tables JMH prints) of runs on the CUDA backend form per-stage tables, paired with "
           "`torch_peers.py --device cuda --shapes <compare.py plan of that JMH file>` rows; any other list of "
           "`{stage, params, ms, ...}` rows (the kernel benchmarks, `scripts/gpu-peers/`, also when printed as "
           "JSON into a log) is listed as it is; the device name comes from `gpu.txt` (nvidia-smi CSV).")
    if not path:
        return lines + ["No GPU run yet. " + how, ""]
    lines += [how, ""]
    if os.path.isdir(path):
        files = sorted(f for ext in ("json", "log", "txt") for f in glob.glob(os.path.join(path, "**", "*." + ext),
                                                                             recursive=True))
    else:
        files = [path]
    jmh, peers, other, device = [], [], [], None
    for f in files:
        try:
            with open(f, errors="replace") as fh:
                text = fh.read()
        except OSError as e:
            lines.append(f"- `{f}`: unreadable ({e})")
            continue
        if os.path.basename(f) == "gpu.txt" and "," in text:  # nvidia-smi CSV: header line, then one per GPU
            rows = [r for r in text.splitlines()[1:] if r.strip()]
            device = device or (rows[0].split(",")[0].strip() if rows else None)
        if f.endswith(".json"):
            try:
                lists = [json.loads(text)]
            except ValueError as e:
                lines.append(f"- `{f}`: not JSON ({e})")
                continue
        else:
            jmh += parse_jmh_text(text)
            lists = json_lists_in_text(text)
        data = [r for x in lists if isinstance(x, list) for r in x]
        for r in data:
            if not isinstance(r, dict):
                continue
            if "primaryMetric" in r and "benchmark" in r:
                jmh.append(r)
            elif "id" in r and r.get("stage") in STAGE_BY_KEY and "ms" in r:
                peers.append(r)
            elif "stage" in r and "ms" in r:
                other.append((os.path.relpath(f, path) if os.path.isdir(path) else os.path.basename(f), r))
    lines.append(f"Results read from `{path}`.")
    lines.append("")
    device = device or next((r.get("gpu") or r.get("device") for _, r in other if r.get("device")), None)
    if device:
        lines += [f"Device: {device}.", ""]
    if jmh:
        _, tables = stage_tables(jmh_rows(jmh), peers, None, cpu=False)
        lines += ["### moe4j (JMH on the CUDA backend) vs PyTorch on the same GPU", ""]
        lines += [t.replace("### ", "#### ") for t in tables]
    if other:
        lines += ["### Kernel benchmarks and peers", "",
                  "| file | stage | params | ms | other metrics |", "| --- | --- | --- | ---: | --- |"]
        skip = {"stage", "params", "ms", "device", "torch", "cuda", "sms", "gpu"}
        for f, r in other:
            extra = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in r.items() if k not in skip)
            lines.append(f"| {f} | {r['stage']} | {shape_label(normalise_params(r.get('params', {})))} | "
                         f"{fmt_ms(r['ms'])} | {extra} |")
        lines.append("")
    if not (jmh or other):
        lines += ["No result rows found there.", ""]
    return lines


def kept_notes(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    i, j = text.find(NOTES_BEGIN), text.find(NOTES_END)
    if i < 0 or j < i:
        return None
    return text[i + len(NOTES_BEGIN):j].strip("\n")


DEFAULT_NOTES = """_Why a target is missed (fill in after a measurement, per stage): what PyTorch does better, what moe4j
would need. This block is kept when the file is regenerated._"""


def cmd_render(a):
    run = load_json(os.path.join(a.run, "run.json"), {}) if a.run else {}
    jmh = load_json(os.path.join(a.run, "jmh.json"), []) if a.run else []
    peers = load_json(os.path.join(a.run, "peers.json"), []) if a.run else []
    torch_env = load_json(os.path.join(a.run, "torch-env.json"), {}) if a.run else {}
    env = {}
    if jmh:
        j = jmh[0]
        env["jdk"] = f"{j.get('vmName', '?')} {j.get('vmVersion', '?')} (JDK {j.get('jdkVersion', '?')})"
        env["jmh"] = (f"{j.get('jmhVersion', '?')}, {j.get('forks')} fork, {j.get('warmupIterations')} × "
                      f"{j.get('warmupTime')} warm-up, {j.get('measurementIterations')} × {j.get('measurementTime')} "
                      f"measurement, mode {j.get('mode')}; JVM args {' '.join(j.get('jvmArgs') or [])}")
    rows = jmh_rows(jmh)
    selected = (run["selected"], run["benchmarks"]) if "selected" in run else None
    summary, tables = stage_tables(rows, peers, selected)
    quick = run.get("mode") == "quick"
    command = run.get("command") or "scripts/bench/compare.sh"
    L = ["# Benchmarks: moe4j next to PyTorch", "",
         "Generated by `scripts/bench/compare.sh` (do not edit by hand, except the notes block). We claim speed "
         "only against a peer measured in the same run, on the same machine, shapes and thread count.", ""]
    if quick:
        L += ["> **QUICK MODE** — tiny JMH and PyTorch iteration counts, to test the pipeline. These numbers are "
              "noise; do not cite them.", ""]
    if not rows:
        L += ["> No measurement in this file yet: run the command below on a quiet machine.", ""]
    L += ["## How to reproduce", "", "```", "scripts/bench/compare.sh            # what produced this file", "```", "",
          *([f"This file: `{command}`.", ""] if run else []),
          "Options: `--quick` (pipeline smoke test, writes under `build/bench/` unless `--out` is given), "
          "`--stages router,dispatch,experts,layer`, `--threads N` (default 2), `--jmh-args \"-p tokens=16384\"`, "
          "`--gpu-results <file|dir>`, `--render-only <run dir>`, `--out <file>`. Raw results of every run stay in "
          "`build/bench/<run>/` (jmh.json, shapes.json, peers.json, torch-env.json, logs).", "",
          "What it does: builds `moe.jar` if stale; checks that PyTorch calls OpenBLAS (refuses otherwise: Debian's "
          "torch without `libopenblas0-pthread` falls back to the reference BLAS, ~60× slower sgemm); runs the JMH "
          "benchmarks with `-Dmoe4j.threads=N`, average time per operation; derives the PyTorch workloads from the "
          "JMH parameters actually run (`compare.py plan`), so both sides see the same shapes; runs "
          "`torch_peers.py` with `/usr/bin/python3 --threads N` (median of repetitions after warm-up); writes this "
          "file. Speedup = PyTorch time / moe4j time (above 1 means moe4j is faster).", ""]
    if run:
        L += ["## Machine", ""] + machine_section(env, torch_env, run) + [""]
    else:
        L += ["## Machine", "", "_Filled by the run: CPU model, cores, threads, JDK, PyTorch and its BLAS (with an "
              "sgemm probe), load average, commit, date, JMH settings._", ""]
    L += ["## Targets (issue 10, 2-core CPU)", ""] + summary + [""]
    L += ["## Results per stage (CPU)", ""] + tables
    L += ["## Notes", "", NOTES_BEGIN, kept_notes(a.out) or DEFAULT_NOTES, NOTES_END, ""]
    L += ["## Semantics matched by the PyTorch peers", "",
          "- Routing: torchtitan-style token choice — sigmoid or softmax scores, expert bias added for selection "
          "only, node-limited groups scored by the sum of their top-2 biased scores, top-k, weights gathered from "
          "the unbiased scores, normalised (+1e-20) and scaled, tokens per expert by `bincount`.",
          "- Dispatch/combine: stable expert-major permutation (token order inside an expert), combine summing "
          "over k in k order with fp32 accumulation.",
          "- Experts: SwiGLU per expert, `(silu(x·W1ᵀ) ⊙ (x·W3ᵀ))·W2ᵀ`, one matmul per expert and projection; "
          "shared experts (when the benchmark has them) as one dense SwiGLU on every token.",
          "- Backward: PyTorch autograd w.r.t. x, gate, W1, W3, W2 with an all-ones upstream gradient.",
          "- What a benchmark hard-codes rather than exposes as a `@Param` (score function, route norm and scale, "
          "the top-k pattern of the dispatch benchmark) is passed to the peer from `FIXED_PEER_PARAMS` in "
          "`scripts/bench/compare.py`; keep it in step when a benchmark changes.",
          "- Timing: moe4j is JMH's average time per operation after warm-up; PyTorch is the median of repetitions "
          "after two warm-up calls. Both sides use the same number of threads; PyTorch's OpenMP pool and "
          "OpenBLAS's own pthread pool are both set to it (they take turns, but on 2 cores a busy machine makes "
          "them compete: measure on a quiet machine, the report records the load average).",
          "- Rows without a PyTorch peer (dispatch with W > 1, the memory-copy baseline, layer with several ranks) "
          "are shown for information.", ""]
    L += gpu_section(a.gpu_results)
    with open(a.out, "w") as f:
        f.write("\n".join(L).rstrip("\n") + "\n")
    print(f"compare.py: wrote {a.out} ({len(rows)} moe4j results, {len(peers or [])} PyTorch results)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--jmh", required=True)
    p.add_argument("--out", required=True)
    r = sub.add_parser("render")
    r.add_argument("--run", help="run directory (jmh.json, peers.json, torch-env.json, run.json); omit for a template")
    r.add_argument("--out", required=True)
    r.add_argument("--gpu-results")
    a = ap.parse_args()
    {"plan": cmd_plan, "render": cmd_render}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
