"""ckpt: safe, fast checkpoint loading and saving for PyTorch users, on
ckpt's Rust core.

    import ckpt
    ckpt.save({"model": model.state_dict(), "step": 10}, "ckpt.pth")
    state = ckpt.load("ckpt.pth")      # what torch.load(weights_only=True) gives

Every format ckpt reads works here: `.pth`/`.pt`/`.bin` (torch.save, never
run), safetensors, NumPy `.npy`/`.npz`, ckpt's `.ckptz`, Hugging Face and
PyTorch Distributed Checkpoint folders, and `s3://` URLs. Tensors come back
as torch tensors when torch is installed, NumPy arrays otherwise
(`tensors="numpy"` or `"torch"` to choose).
"""

import os

from ._ckpt import CkptError, RawTensor
from ._ckpt import load as _load
from ._ckpt import save as _save
from ._ckpt import verify as _verify

__all__ = ["CkptError", "load", "load_state_dict", "save", "verify"]

try:
    import torch
except ImportError:  # torch is optional
    torch = None


def save(obj, path, durable=False):
    """Saves a tree of tensors (torch or NumPy), dicts with str or int keys,
    lists, tuples, numbers, strings, bytes and None to `path`, in the format
    its extension names (`.pth`, `.safetensors`, `.npz`, `.ckptz`, ...).
    The file is replaced atomically; `durable=True` also syncs it to disk."""
    _save(_to_raw(obj), os.fspath(path), durable)


def load(path, mmap=True, tensors=None):
    """The tree in `path` (any format or folder ckpt reads, or `s3://...`),
    as `torch.load(path, weights_only=True)` would give it. Tensors are
    torch tensors when torch is installed (`tensors="torch"`), else NumPy
    arrays (`tensors="numpy"`). Nothing in the file is ever run."""
    kind = _kind(tensors)
    return _from_raw(_load(os.fspath(path), mmap), kind)


def load_state_dict(path, mmap=True, tensors=None):
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

    walk("", load(path, mmap=mmap, tensors=tensors))
    return flat


def verify(path):
    """Reads the whole file (or folder) at `path`, every tensor byte
    included, and compares every checksum it stores. Returns a dict:
    `format`, `tensors`, `bytes`, `checksums` (how many were compared) and
    `mismatches` (entries whose data does not match; the file still loads,
    as in torch). A structural problem, or a hash mismatch in a checkpoint
    ckpt wrote, raises CkptError."""
    return _verify(os.fspath(path))


def _kind(tensors):
    if tensors is None:
        return "torch" if torch is not None else "numpy"
    if tensors not in ("torch", "numpy"):
        raise ValueError(f'tensors must be "torch" or "numpy", not {tensors!r}')
    if tensors == "torch" and torch is None:
        raise ImportError('tensors="torch" needs torch installed')
    return tensors


def _is_tensor(value):
    import numpy

    return isinstance(value, numpy.ndarray) or (torch is not None and isinstance(value, torch.Tensor))


def _to_raw(obj):
    """The tree with every tensor as a RawTensor (its bytes copied once)."""
    import numpy

    if torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        flat = t.reshape(-1)
        data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        return RawTensor(dtype, tuple(t.shape), data)
    if isinstance(obj, numpy.ndarray):
        a = numpy.ascontiguousarray(obj)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        return RawTensor(a.dtype.name, tuple(a.shape), a.tobytes())
    if isinstance(obj, dict):
        return {k: _to_raw(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_raw(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_raw(v) for v in obj)
    return obj


def _from_raw(obj, kind):
    """The tree with every RawTensor as a torch tensor or a NumPy array."""
    if isinstance(obj, RawTensor):
        return _tensor(obj, kind)
    if isinstance(obj, dict):
        return {k: _from_raw(v, kind) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_raw(v, kind) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_from_raw(v, kind) for v in obj)
    return obj


def _tensor(raw, kind):
    shape = tuple(raw.shape)
    if kind == "torch":
        dtype = getattr(torch, raw.dtype)
        if not raw.data:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(bytearray(raw.data), dtype=dtype).reshape(shape)
    import numpy

    try:
        dtype = numpy.dtype(raw.dtype)
    except TypeError:
        raise CkptError(f"a {raw.dtype} tensor needs torch (NumPy has no {raw.dtype})") from None
    return numpy.frombuffer(raw.data, dtype=dtype).reshape(shape)
