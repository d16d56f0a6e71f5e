"""ckpt: safe, fast checkpoint loading and saving for PyTorch users, on
ckpt's Rust core.

    import ckpt
    ckpt.save({"model": model.state_dict(), "step": 10}, "ckpt.pth")
    state = ckpt.load("ckpt.pth")      # what torch.load(weights_only=True) gives

    mgr = ckpt.CheckpointManager("runs/exp1", keep_last=3, keep_best=1, metric="val_loss")
    mgr.save(epoch, {"model": model.state_dict(), "optimizer": opt.state_dict()},
             metrics={"val_loss": v})
    state = mgr.restore_latest()       # the newest intact step

Every format ckpt reads works here: `.pth`/`.pt`/`.bin` (torch.save, never
run), safetensors, NumPy `.npy`/`.npz`, ckpt's `.ckptz`, Hugging Face and
PyTorch Distributed Checkpoint folders, and `s3://` URLs. Tensors come back
as torch tensors when torch is installed, NumPy arrays otherwise
(`tensors="numpy"` or `"torch"` to choose). Tensor bytes are never copied
on the way in or out: loads hand torch the file's memory map (private, so
writing to a tensor never touches the file), saves write from the tensors'
own memory.
"""

import json
import os
from types import SimpleNamespace

from ._ckpt import (
    CkptError,
    IntegrityError,
    LockedError,
    RawTensor,
    StepError,
    UnsafeFileError,
)
from ._ckpt import convert as _convert
from ._ckpt import diff as _diff
from ._ckpt import inspect as _inspect
from ._ckpt import load as _load
from ._ckpt import save as _save
from ._ckpt import verify as _verify
from .manager import CheckpointManager, Restored
from .tensors import Object
from .tensors import from_raw as _from_raw
from .tensors import is_tensor as _is_tensor
from .tensors import kind as _kind
from .tensors import to_raw as _to_raw

__all__ = [
    "CheckpointManager",
    "CkptError",
    "IntegrityError",
    "LockedError",
    "Object",
    "Restored",
    "StepError",
    "UnsafeFileError",
    "convert",
    "diff",
    "inspect",
    "load",
    "load_state_dict",
    "save",
    "verify",
]


def save(obj, path, durable=False):
    """Saves a tree of tensors (torch or NumPy), dicts with str or int keys,
    lists, tuples, numbers, strings, bytes and None to `path`, in the format
    its extension names (`.pth`, `.safetensors`, `.npz`, `.ckptz`, ...).
    The file is replaced atomically; `durable=True` also syncs it to disk.
    CPU tensors are written from their own memory (others are copied to the
    CPU once); the GIL is released while writing."""
    _save(_to_raw(obj), os.fspath(path), durable)


def load(path, map_location=None, mmap=True, tensors=None):
    """The tree in `path` (any format or folder ckpt reads, or `s3://...`),
    as `torch.load(path, weights_only=True)` would give it. Tensors are
    torch tensors when torch is installed (`tensors="torch"`), else NumPy
    arrays (`tensors="numpy"`). Nothing in the file is ever run.

    With `mmap=True` (the default) tensors are views of a private
    copy-on-write map of the file: nothing is read until used, and writing
    to a tensor never changes the file. `map_location` moves every tensor
    to a device, as torch's does: a device string (`"cuda"`, `"cuda:1"`,
    `"cpu"`), a `torch.device`, or a dict whose targets are all one device
    (ckpt does not keep the device a tensor was saved from)."""
    kind = _kind(tensors)
    tree = _from_raw(_load(os.fspath(path), mmap), kind)
    return _map_location(tree, map_location, kind)


def load_state_dict(path, map_location=None, mmap=True, tensors=None):
    """The file's tensors as a flat dict, nested keys joined with `.` as
    torch's state dicts name them."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}{i}.", v)
        elif _is_tensor(value):
            flat[prefix[:-1]] = value

    walk("", load(path, map_location=map_location, mmap=mmap, tensors=tensors))
    return flat


def verify(path):
    """Reads the whole file (or folder) at `path`, every tensor byte
    included, and compares every checksum it stores. Returns a dict:
    `format`, `tensors`, `bytes`, `checksums` (how many were compared) and
    `mismatches` (entries whose data does not match; the file still loads,
    as in torch). A structural problem, or a hash mismatch in a checkpoint
    ckpt wrote, raises CkptError."""
    return _verify(os.fspath(path))


def inspect(path):
    """What the file (or folder) at `path` holds, as `ckpt inspect --json`
    prints it: a dict of `format`, `tensors` (name, dtype, shape, bytes;
    nested names joined with `/`), `values` (the non-tensor entries by
    path), `metadata`, `objects` (Python classes the file names, never
    built), `python` (for pickles: whether torch.load(weights_only=True)
    opens it, and why not), `total_params` and `total_bytes`. No tensor
    byte is read."""
    return json.loads(_inspect(os.fspath(path)))


def diff(a, b, atol=0.0, rtol=0.0):
    """How the checkpoints `a` and `b` (any formats) differ, as `ckpt diff
    --json` prints it: `equal`, `only_in_a`, `only_in_b`, `tensors` (for
    each shared name: `equal`, `max_abs`, `max_rel`, and the dtypes and
    shapes when they differ) and `values` (non-tensor entries that differ).
    Tensors are equal when |a - b| <= atol + rtol * |b| element by element
    (NaN equals NaN)."""
    return json.loads(_diff(os.fspath(a), os.fspath(b), float(atol), float(rtol)))


def convert(src, dst, format=None, dtype=None, strip_prefix=None, max_shard_size=None,
            package=False, input_shape=None):
    """Converts `src` (any format or folder ckpt reads) to `dst`, as `ckpt
    convert` does: the format is `dst`'s extension unless `format` names
    one ("safetensors", "pth", "npz", "npy", "ckptz", "dcp" for a PyTorch
    Distributed Checkpoint folder, "dcp-hf" for its Hugging Face flavour).
    `dtype` (a torch float dtype or its name) casts every float tensor;
    `strip_prefix` removes a key prefix such as "module."; `max_shard_size`
    (bytes) writes Hugging Face shards and an index. A DCP folder to one
    .safetensors file is streamed tensor by tensor. `package=True` writes
    a whole pickled model (`torch.save(model)` of an `nn.Sequential`) as a
    model package with the spec derived from its modules (`input_shape`
    per sample when its first layer does not tell). Returns a dict of
    `read_as`, `written_as`, `tensors` and `bytes`."""
    if dtype is not None and not isinstance(dtype, str):
        dtype = str(dtype).removeprefix("torch.")
    rest = SimpleNamespace(strip_prefix=strip_prefix, max_shard_size=max_shard_size, package=package,
                           input_shape=None if input_shape is None else list(input_shape))
    read_as, written_as, tensors, nbytes = _convert(os.fspath(src), os.fspath(dst), format, dtype, rest)
    return {"read_as": read_as, "written_as": written_as, "tensors": tensors, "bytes": nbytes}


def _map_location(tree, map_location, kind):
    if map_location is None:
        return tree
    if kind != "torch":
        raise ValueError("map_location needs torch tensors")
    import torch

    if isinstance(map_location, dict):
        targets = set(map(str, map_location.values()))
        if len(targets) != 1:
            raise ValueError(
                "map_location maps saved devices to different targets; ckpt does not keep "
                "the device a tensor was saved from, so give one device"
            )
        map_location = targets.pop()
    elif callable(map_location):
        raise TypeError("map_location as a function is not supported; give a device")
    device = torch.device(map_location)
    if device.type == "cpu":
        return tree

    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, tuple):
            return tuple(move(v) for v in value)
        return value

    return move(tree)
