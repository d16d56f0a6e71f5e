"""torch.distributed.checkpoint's side of the DCP interop tests.

    dcp_peer.py load DIR EXPECTED.pth WORLD
    dcp_peer.py save-big DIR
    dcp_peer.py load-hf DIR EXPECTED.safetensors

Loads the DCP folder DIR with torch's own `dcp.load` and checks it equals
EXPECTED.pth (read with torch.load):

- WORLD == 1: no process group, into a state dict shaped like EXPECTED
  (tensors zeroed, plain values replaced by None), and into an empty
  state dict (`dcp_to_torch_save`'s path, which rebuilds the whole tree);
- WORLD > 1: WORLD gloo processes on the CPU, each tensor with a
  dimension a DTensor sharded on dimension 0 (0-d ones replicated),
  compared with `full_tensor()` on every rank.
"""

import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save


def same(a, b, at="root"):
    """Raises unless a and b are the same tree (tensors bit for bit)."""
    if isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor), f"{at}: {type(a)} is not a tensor"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{at}: {a.dtype} {a.shape} != {b.dtype} {b.shape}"
        bits = lambda t: t.reshape(-1).view(torch.uint8) if t.numel() else t
        assert torch.equal(bits(a), bits(b)), f"{at}: values differ"
    elif isinstance(b, dict):
        assert isinstance(a, dict) and set(map(str, a)) == set(map(str, b)), f"{at}: keys {list(a)} != {list(b)}"
        for k in b:
            same(a[k] if k in a else a[str(k)], b[k], f"{at}.{k}")
    elif isinstance(b, (list, tuple)):
        assert isinstance(a, (list, tuple)) and len(a) == len(b), f"{at}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{at}[{i}]")
    else:
        assert a == b, f"{at}: {a!r} != {b!r}"


def holds_tensor(v):
    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, dict):
        return True
    if isinstance(v, list):
        return any(holds_tensor(x) for x in v)
    return False


def template(v, shard):
    """EXPECTED with every tensor zeroed (through `shard`) and every other
    leaf None: what dcp.load must fill in."""
    if isinstance(v, torch.Tensor):
        return shard(torch.zeros_like(v))
    if isinstance(v, dict):
        return {str(k): template(x, shard) for k, x in v.items()}
    if isinstance(v, list) and holds_tensor(v):
        return [template(x, shard) for x in v]
    return None


def full(v):
    """The tree with every DTensor gathered."""
    if hasattr(v, "full_tensor"):
        return v.full_tensor()
    if isinstance(v, dict):
        return {k: full(x) for k, x in v.items()}
    if isinstance(v, list):
        return [full(x) for x in v]
    return v


def str_keys(v):
    if isinstance(v, dict):
        return {str(k): str_keys(x) for k, x in v.items()}
    if isinstance(v, list):
        return [str_keys(x) for x in v]
    return v


def rank_main(rank, world, folder, expected_path, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (world,))

    def shard(t):
        return distribute_tensor(t, mesh, [Shard(0)] if t.dim() else [Replicate()])

    expected = str_keys(torch.load(expected_path, weights_only=False))
    state = template(expected, shard)
    dcp.load(state, checkpoint_id=folder)
    same(full(state), expected)
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(folder, expected_path, world):
    expected = str_keys(torch.load(expected_path, weights_only=False))
    if world == 1:
        state = template(expected, lambda t: t)
        dcp.load(state, checkpoint_id=folder, no_dist=True)
        same(state, expected)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "whole.pth")
            dcp_to_torch_save(folder, out)
            same(torch.load(out, weights_only=False), expected)
    else:
        mp.spawn(rank_main, args=(world, folder, expected_path, free_port()), nprocs=world, join=True)
    print(f"torch dcp.load with {world} rank(s): equal to {os.path.basename(expected_path)}")


def save_big(folder):
    """One process saves {"w": a [1000, 512] float32 tensor whose element
    i is i / 2}: one 2 MB item."""
    w = torch.arange(512_000, dtype=torch.float32).reshape(1000, 512) * 0.5
    dcp.save({"w": w}, checkpoint_id=folder, no_dist=True)
    print(f"torch dcp.save: {folder}")


def load_hf(folder, expected_path):
    """Loads the Hugging Face flavoured folder with torch's own
    HuggingFaceStorageReader into zeroed tensors: equal to EXPECTED."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    expected = load_file(expected_path)
    state = {k: torch.zeros_like(v) for k, v in expected.items()}
    dcp.load(state, storage_reader=HuggingFaceStorageReader(folder), no_dist=True)
    same(state, expected)
    print(f"torch HuggingFaceStorageReader: equal to {os.path.basename(expected_path)}")


if __name__ == "__main__":
    if sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "load-hf":
        load_hf(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "save-big":
        save_big(sys.argv[2])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
