"""ckpt's benchmark harness: ckpt against its peers and the hardware limits,
in one run, on the same bytes.

    python bench/compare.py [--runs N] [--gib X] [--small N] [--workdir DIR]

Needs a Python with torch and safetensors (scripts/test creates one at
$CKPT_VENV, default ~/.cache/ckpt-venv) and cargo. It builds the Rust side
(crates/ckpt/examples/harness.rs) in release mode and runs two cases:

  large  X GiB (default 1) as 200 float32 tensors
  small  N (default 5000) float32 tensors of 32x32

For each it writes the tensors once with safetensors and torch.save (the
shared sources), then measures, RUNS times each, and reports the median;
within each process the operations take turns round by round, so a slow
spell of the shared machine falls on all of them alike:

  limits     single-thread memcpy of the same bytes (Rust copy_from_slice);
             plain sequential write() of the same bytes to a new file, with
             and without fsync (Rust, one write per tensor)
  ckpt       save (page cache, and durable = fsync), open + list tensors,
             load + read every byte (memory-mapped, and owned); save .pth,
             and load + read every byte of the .pth torch.save wrote
  torch      torch.save; torch.load + read every byte, plain and mmap=True
  safetensors  save_file; load_file + read every byte
  ckpt (Python)  the `ckpt` package (pip install crates/ckpt-py): ckpt.save
             (.safetensors and .pth), ckpt.load + read every byte (its own
             file, and torch.save's .pth), and the stall of
             CheckpointManager.save_async (until the call returns)

Python operations also report CPU seconds (every thread of the process),
which the machine's swings in write speed do not move.

"Read every byte" is a wrapping sum of the data as 8-byte words in Rust and
a single-threaded torch sum over an integer view in Python. Every output
file is deleted before each timed write, so all writers create a new file.
All files live in the page cache (the workdir defaults to /tmp); the
machine is shared and noisy, so compare ratios within one run.
Results go to bench/out/results.json and a markdown table to stdout.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


def timed(runs, fn, before=lambda: None):
    """Wall seconds and CPU seconds (every thread of this process) of each
    run of `fn`."""
    wall, cpu = [], []
    for _ in range(runs):
        before()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def touch(sd):
    total = 0
    for t in sd.values():
        flat = t.reshape(-1).view(torch.uint8)
        usable = flat.numel() - flat.numel() % 4
        total += int(flat[:usable].view(torch.int32).sum()) + int(flat[usable:].sum())
    return total


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def fresh(path):
    """Before a timed write: no old file, and no dirty pages left by an
    earlier writer for the kernel to throttle this one on."""
    remove(path)
    os.sync()


def python_side(sd, workdir, runs):
    pt = workdir / "torch.pth"
    st = workdir / "peer.safetensors"
    ops = [
        ("torch_save", lambda: torch.save(sd, pt), lambda: fresh(pt)),
        ("torch_load_touch", lambda: touch(torch.load(pt, weights_only=True)), lambda: None),
        ("torch_load_mmap_touch", lambda: touch(torch.load(pt, weights_only=True, mmap=True)), lambda: None),
        ("safetensors_save", lambda: save_file(sd, st), lambda: fresh(st)),
        ("safetensors_load_touch", lambda: touch(load_file(st)), lambda: None),
    ]
    ops += ckpt_ops(sd, workdir, pt)
    r = {name: [] for name, _, _ in ops}
    r.update({"cpu_" + name: [] for name, _, _ in ops})
    # Operations take turns, round by round in a rotating order, as on the
    # Rust side; a load that comes first in a round reads the previous
    # round's file.
    for i in range(runs):
        for name, fn, before in ops[i % len(ops):] + ops[: i % len(ops)]:
            wall, cpu = timed(1, fn, before)
            r[name] += wall
            r["cpu_" + name] += cpu
    for path in (pt, st, workdir / "py.safetensors", workdir / "py.pth"):
        remove(path)
    return r


def ckpt_ops(sd, workdir, pt):
    """ckpt's Python package (crates/ckpt-py) on the same tensors: save and
    load + read every byte, of its own files and of torch.save's, and the
    stall of a background save in a run (the call's return, not the
    commit)."""
    import shutil

    import ckpt

    st, pth, run = workdir / "py.safetensors", workdir / "py.pth", workdir / "py-run"
    shutil.rmtree(run, ignore_errors=True)
    mgr = ckpt.CheckpointManager(run, keep_last=1, durable=False)
    step = iter(range(1 << 30))

    def stall():
        mgr.save_async(next(step), sd)

    return [
        ("ckpt_py_save", lambda: ckpt.save(sd, st), lambda: fresh(st)),
        ("ckpt_py_save_pth", lambda: ckpt.save(sd, pth), lambda: fresh(pth)),
        ("ckpt_py_load_touch", lambda: touch(ckpt.load(st)), lambda: None),
        ("ckpt_py_load_torch_pth_touch", lambda: touch(ckpt.load(pt)), lambda: None),
        ("ckpt_py_save_async_stall", stall, mgr.wait),
    ]


def harness(*args):
    exe = ROOT / "target" / "release" / "examples" / "harness"
    out = subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def run_case(name, sd, workdir, runs):
    source = workdir / f"source-{name}.safetensors"
    save_file(sd, source)
    torch_pth = workdir / f"source-{name}.pth"
    torch.save(sd, torch_pth)
    print(f"[{name}] measuring Rust side ...", file=sys.stderr)
    r = harness(source, torch_pth, workdir, runs)
    print(f"[{name}] measuring Python peers ...", file=sys.stderr)
    r.update(python_side(sd, workdir, runs))
    if name == "large":
        r["rss"] = harness("--rss", source)
    remove(source)
    remove(torch_pth)
    r["runs"] = runs
    r["tensors"] = len(sd)
    return r


ROWS = [
    ("memcpy", "limit: memcpy, single thread"),
    ("write", "limit: plain write, new file"),
    ("write_fsync", "limit: plain write + fsync"),
    ("ckpt_save", "ckpt save"),
    ("ckpt_save_durable", "ckpt save, durable (fsync)"),
    ("ckpt_save_pth", "ckpt save .pth"),
    ("torch_save", "torch.save"),
    ("safetensors_save", "safetensors save_file"),
    ("ckpt_open_list", "ckpt open + list tensors"),
    ("ckpt_load_touch", "ckpt load (mmap) + read all"),
    ("ckpt_load_owned_touch", "ckpt load (owned) + read all"),
    ("ckpt_load_pth_touch", "ckpt load torch's .pth + read all"),
    ("torch_load_touch", "torch.load + read all"),
    ("torch_load_mmap_touch", "torch.load(mmap=True) + read all"),
    ("safetensors_load_touch", "safetensors load_file + read all"),
    ("ckpt_py_save", "Python ckpt.save .safetensors"),
    ("ckpt_py_save_pth", "Python ckpt.save .pth"),
    ("ckpt_py_load_touch", "Python ckpt.load .safetensors + read all"),
    ("ckpt_py_load_torch_pth_touch", "Python ckpt.load torch's .pth + read all"),
    ("ckpt_py_save_async_stall", "Python mgr.save_async: the call's stall"),
]


def median(r, key):
    return statistics.median(r[key])


def table(name, r):
    gb = r["bytes"] / 1e9
    lines = [
        f"**{name}**: {r['tensors']} tensors, {r['bytes'] / 2**20:,.0f} MiB, median of {r['runs']} runs",
        "",
        "| operation | median ms | CPU ms | GB/s | × memcpy | × plain write |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in ROWS:
        m = median(r, key)
        rate = gb / m
        cpu = f"{median(r, 'cpu_' + key) * 1e3:,.2f}" if "cpu_" + key in r else "—"
        lines.append(
            f"| {label} | {m * 1e3:,.2f} | {cpu} | {rate:,.2f} | {median(r, 'memcpy') / m:.2f} | {median(r, 'write') / m:.2f} |"
        )
    return "\n".join(lines)


def targets(large, small):
    m = lambda r, k: median(r, k)
    checks = [
        ("open + list 1 GiB file < 5 ms", m(large, "ckpt_open_list") * 1e3, "ms", m(large, "ckpt_open_list") < 0.005),
        ("load + read all ≥ 0.8× memcpy", m(large, "memcpy") / m(large, "ckpt_load_touch"), "×", m(large, "memcpy") / m(large, "ckpt_load_touch") >= 0.8),
        ("load + read all ≥ 1× safetensors", m(large, "safetensors_load_touch") / m(large, "ckpt_load_touch"), "×", m(large, "safetensors_load_touch") >= m(large, "ckpt_load_touch")),
        ("save ≥ 0.9× plain write", m(large, "write") / m(large, "ckpt_save"), "×", m(large, "write") / m(large, "ckpt_save") >= 0.9),
        ("save ≥ 1× torch.save", m(large, "torch_save") / m(large, "ckpt_save"), "×", m(large, "torch_save") >= m(large, "ckpt_save")),
        ("save ≥ 2.5× safetensors save_file", m(large, "safetensors_save") / m(large, "ckpt_save"), "×", m(large, "safetensors_save") / m(large, "ckpt_save") >= 2.5),
        (".pth load + read all ≥ 3× torch.load", m(large, "torch_load_touch") / m(large, "ckpt_load_pth_touch"), "×", m(large, "torch_load_touch") / m(large, "ckpt_load_pth_touch") >= 3),
        (".pth load + read all ≥ 0.8× memcpy", m(large, "memcpy") / m(large, "ckpt_load_pth_touch"), "×", m(large, "memcpy") / m(large, "ckpt_load_pth_touch") >= 0.8),
        (".pth save ≥ 0.9× plain write", m(large, "write") / m(large, "ckpt_save_pth"), "×", m(large, "write") / m(large, "ckpt_save_pth") >= 0.9),
        (".pth save ≥ 1× torch.save", m(large, "torch_save") / m(large, "ckpt_save_pth"), "×", m(large, "torch_save") >= m(large, "ckpt_save_pth")),
        ("small .pth load + read all ≥ 2× torch.load", m(small, "torch_load_touch") / m(small, "ckpt_load_pth_touch"), "×", m(small, "torch_load_touch") / m(small, "ckpt_load_pth_touch") >= 2),
        ("small: save vs torch.save", m(small, "torch_save") / m(small, "ckpt_save"), "×", None),
        ("small: load + read all vs torch.load", m(small, "torch_load_touch") / m(small, "ckpt_load_touch"), "×", None),
        ("Python ckpt.load + read all ≥ 5× torch.load", m(large, "torch_load_touch") / m(large, "ckpt_py_load_touch"), "×", m(large, "torch_load_touch") / m(large, "ckpt_py_load_touch") >= 5),
        ("Python ckpt.load + read all ≥ 2× safetensors load_file", m(large, "safetensors_load_touch") / m(large, "ckpt_py_load_touch"), "×", m(large, "safetensors_load_touch") / m(large, "ckpt_py_load_touch") >= 2),
        ("Python ckpt.save ≥ 1× torch.save (wall)", m(large, "torch_save") / m(large, "ckpt_py_save"), "×", m(large, "torch_save") >= m(large, "ckpt_py_save")),
        ("Python ckpt.save ≥ 1× torch.save (CPU)", m(large, "cpu_torch_save") / m(large, "cpu_ckpt_py_save"), "×", m(large, "cpu_torch_save") >= m(large, "cpu_ckpt_py_save")),
        ("Python ckpt.save ≥ 1× safetensors (wall)", m(large, "safetensors_save") / m(large, "ckpt_py_save"), "×", m(large, "safetensors_save") >= m(large, "ckpt_py_save")),
        ("Python ckpt.save ≥ 1× safetensors (CPU)", m(large, "cpu_safetensors_save") / m(large, "cpu_ckpt_py_save"), "×", m(large, "cpu_safetensors_save") >= m(large, "cpu_ckpt_py_save")),
        ("small: Python ckpt.load + read all vs torch.load", m(small, "torch_load_touch") / m(small, "ckpt_py_load_touch"), "×", None),
        ("small: Python ckpt.save vs torch.save (CPU)", m(small, "cpu_torch_save") / m(small, "cpu_ckpt_py_save"), "×", None),
        ("save_async stall ≤ 1.5× memcpy", m(large, "ckpt_py_save_async_stall") / m(large, "memcpy"), "× memcpy", m(large, "ckpt_py_save_async_stall") <= 1.5 * m(large, "memcpy")),
        ("mapped load peak RSS < 100 MiB", large["rss"]["peak_rss_bytes"] / 2**20, "MiB", large["rss"]["peak_rss_bytes"] < 100 * 2**20),
    ]
    lines = ["| target | measured | met |", "|---|---:|---|"]
    for label, value, unit, ok in checks:
        verdict = "—" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {label} | {value:,.2f} {unit} | {verdict} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--workdir", default="/tmp/ckpt-bench")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print("building the Rust harness ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ckpt", "--example", "harness"], cwd=ROOT, check=True)

    torch.manual_seed(0)
    per = int(args.gib * 2**30 / 4 / 200)
    large = {f"layers.{i}.weight": torch.randn(per) for i in range(200)}
    large_r = run_case("large", large, workdir, args.runs)
    del large
    small = {f"blocks.{i}.weight": torch.randn(32, 32) for i in range(args.small)}
    small_r = run_case("small", small, workdir, args.runs)

    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"large": large_r, "small": small_r}, indent=1))
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, workdir {workdir}\n")
    print(table("large", large_r) + "\n")
    print(table("small", small_r) + "\n")
    print(targets(large_r, small_r))


if __name__ == "__main__":
    main()
