"""Consolidating a 4-rank PyTorch Distributed Checkpoint into one file:
ckpt against torch's own tool, in one run, on the same folder.

    python bench/dcp_consolidate.py [--gib X] [--runs N] [--workdir DIR]

torch writes X GiB (default 1) of float32 tensors (64 of them) as a
4-rank DCP folder, once: 4 gloo processes on the CPU, each tensor a DTensor
sharded on rows. Then, RUNS times (default 3), in turns, two child
processes consolidate it, each measured by /usr/bin/time (wall time,
user + system CPU time, peak resident memory):

  ckpt   `ckpt convert DIR out.safetensors`: streams tensor by tensor
  torch  `dcp_to_torch_save(DIR, out.pth)`: torch's consolidation, which
         builds the whole state dict in memory

Both outputs are checked equal tensor for tensor once. Prints medians, the
ratios, and writes bench/out/dcp_consolidate.json. Builds the ckpt binary
(release) first. The machine is shared and its disk speed swings: compare
the ratios within one run, and CPU time beside wall time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TENSORS = 64


def write_rank(rank, world, folder, gib, port):
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.tensor import DTensor, Shard, init_device_mesh

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    cols = 1024
    rows = int(gib * (1 << 30)) // (TENSORS * cols * 4)
    rows -= rows % world
    state = {}
    for i in range(TENSORS):
        g = torch.Generator().manual_seed(i * world + rank)
        local = torch.randn(rows // world, cols, generator=g)
        state[f"layers.{i}.weight"] = DTensor.from_local(local, mesh, [Shard(0)], run_check=False)
    dcp.save(state, checkpoint_id=folder)
    dist.barrier()
    dist.destroy_process_group()


def make_folder(folder, gib):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(write_rank, args=(4, str(folder), gib, port), nprocs=4, join=True)


def measured(cmd):
    """Runs cmd under /usr/bin/time (a small process, so the peak RSS is
    the command's own, not this Python's, which a fork would copy); its
    wall seconds, CPU seconds and peak RSS in MiB."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%U %S %M", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{cmd} failed: {done.stderr}")
    user, system, rss_kib = done.stderr.strip().splitlines()[-1].split()
    return wall, float(user) + float(system), int(rss_kib) / 1024


def check(ckpt_out, torch_out):
    import torch
    from safetensors.torch import load_file

    ours = load_file(ckpt_out)
    theirs = torch.load(torch_out, weights_only=True, mmap=True)
    assert ours.keys() == theirs.keys(), "different tensors"
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/ckpt-bench-dcp")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ckpt-cli"], cwd=ROOT, check=True)
    ckpt = ROOT / "target" / "release" / "ckpt"
    folder = work / f"dcp-{args.gib}gib"
    if not (folder / ".metadata").exists():
        make_folder(folder, args.gib)
    size = sum(f.stat().st_size for f in folder.iterdir())
    ckpt_out, torch_out = work / "out.safetensors", work / "out.pth"
    cases = {
        "ckpt": [str(ckpt), "convert", str(folder), str(ckpt_out)],
        "torch": [
            sys.executable,
            "-c",
            "import sys; from torch.distributed.checkpoint.format_utils import dcp_to_torch_save;"
            " dcp_to_torch_save(sys.argv[1], sys.argv[2])",
            str(folder),
            str(torch_out),
        ],
    }
    results = {name: [] for name in cases}
    for run in range(args.runs):
        for name, cmd in cases.items():
            for out in (ckpt_out, torch_out):
                out.unlink(missing_ok=True)
            results[name].append(measured(cmd))
            if run == 0 and name == "torch":
                subprocess.run(cases["ckpt"], check=True, stdout=subprocess.DEVNULL)
                check(ckpt_out, torch_out)
    median = {n: [statistics.median(r[i] for r in rs) for i in range(3)] for n, rs in results.items()}
    print(f"consolidating a {size / (1 << 30):.2f} GiB 4-rank DCP folder ({TENSORS} tensors), medians of {args.runs}:\n")
    print("| tool | wall | CPU | peak RSS |")
    print("|---|---|---|---|")
    for n, (wall, cpu, rss) in median.items():
        print(f"| {n} | {wall:.2f} s | {cpu:.2f} s | {rss:.0f} MiB |")
    c, t = median["ckpt"], median["torch"]
    print(f"\nckpt / torch: wall {c[0] / t[0]:.2f}x, CPU {c[1] / t[1]:.2f}x, peak RSS {c[2] / t[2]:.2f}x")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "dcp_consolidate.json").write_text(json.dumps({"bytes": size, "runs": results, "medians": median}, indent=2))


if __name__ == "__main__":
    main()
