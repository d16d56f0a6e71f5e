"""Tensors between torch or NumPy and ckpt's RawTensor, without copying
their bytes: a RawTensor to save names the tensor's own memory (a uint8
NumPy view of it), and a loaded RawTensor's memory is viewed through its
`__array_interface__`."""

import sys

from . import _ckpt
from ._ckpt import CkptError, RawTensor

if sys.byteorder != "little":
    raise ImportError("ckpt's Python package needs a little-endian machine")

try:
    import torch
except ImportError:  # torch is optional
    torch = None


def kind(tensors):
    """`"torch"` or `"numpy"`: what `tensors=` asks for, or the default."""
    if tensors is None:
        return "torch" if torch is not None else "numpy"
    if tensors not in ("torch", "numpy"):
        raise ValueError(f'tensors must be "torch" or "numpy", not {tensors!r}')
    if tensors == "torch" and torch is None:
        raise ImportError('tensors="torch" needs torch installed')
    return tensors


def is_tensor(value):
    import numpy

    return isinstance(value, numpy.ndarray) or (torch is not None and isinstance(value, torch.Tensor))


def to_raw(obj):
    """The tree with every tensor as a RawTensor over its memory."""
    import numpy

    if torch is not None and isinstance(obj, torch.Tensor):
        return _torch_raw(obj)
    if isinstance(obj, numpy.ndarray):
        a = numpy.ascontiguousarray(obj)
        if a.dtype.byteorder == ">":  # "=" is little-endian here (checked at import)
            a = a.astype(a.dtype.newbyteorder("<"))
        return RawTensor(a.dtype.name, tuple(obj.shape), a.reshape(-1).view(numpy.uint8))
    if isinstance(obj, dict):
        return {k: to_raw(v) for k, v in obj.items()}
    if isinstance(obj, Object):
        return _ckpt.Object(obj.class_name, to_raw(obj.args), to_raw(obj.state))
    if isinstance(obj, list):
        return [to_raw(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_raw(v) for v in obj)
    return obj


def _torch_raw(t):
    if t.is_sparse or t.layout != torch.strided:
        raise TypeError(f"ckpt saves dense tensors, not {t.layout}")
    if t.is_quantized:
        raise TypeError("ckpt.save takes float and integer tensors; quantize with ckpt compress")
    shape = tuple(t.shape)
    dtype = str(t.dtype).removeprefix("torch.")
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    if t.numel() == 0:
        return RawTensor(dtype, shape, b"")
    return RawTensor(dtype, shape, t.reshape(-1).view(torch.uint8).numpy())


def from_raw(obj, kind):
    """The tree with every RawTensor as a torch tensor or a NumPy array."""
    if isinstance(obj, RawTensor):
        return _tensor(obj, kind)
    if isinstance(obj, _ckpt.Object):
        return Object(obj.class_name, from_raw(obj.args, kind), from_raw(obj.state, kind))
    if isinstance(obj, dict):
        return {k: from_raw(v, kind) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_raw(v, kind) for v in obj]
    if isinstance(obj, tuple):
        return tuple(from_raw(v, kind) for v in obj)
    return obj


def _tensor(raw, kind):
    import numpy

    shape = tuple(raw.shape)
    data = numpy.asarray(raw)  # uint8 over ckpt's memory, keeping it alive
    if not data.flags.writeable:
        data = data.copy()
    if kind == "torch":
        dtype = getattr(torch, raw.dtype, None)
        if dtype is None:
            raise CkptError(f"a {raw.dtype} tensor needs a torch that has torch.{raw.dtype}")
        if data.size == 0:
            return torch.empty(shape, dtype=dtype)
        if data.ctypes.data % dtype.itemsize:
            data = data.copy()  # a stored entry at an odd offset: aligned once
        return torch.from_numpy(data).view(dtype).reshape(shape)
    try:
        dtype = numpy.dtype(raw.dtype)
    except TypeError:
        raise CkptError(f"a {raw.dtype} tensor needs torch (NumPy has no {raw.dtype})") from None
    return data.view(dtype).reshape(shape)


class Object:
    """A Python object a checkpoint's pickle names (an `argparse.Namespace`,
    a class of the training script), inert: ckpt never imports its class,
    constructs it or runs any of it, where `torch.load(weights_only=False)`
    would. `class_name` is the class's dotted name, `args` what the pickle
    would call it with, `state` what it would set on it (often a dict of
    its attributes). Read-only; `ckpt.save` writes it back as it was
    read."""

    __slots__ = ("class_name", "args", "state")

    def __init__(self, class_name, args=(), state=None):
        object.__setattr__(self, "class_name", class_name)
        object.__setattr__(self, "args", tuple(args))
        object.__setattr__(self, "state", state)

    def __setattr__(self, name, value):
        raise AttributeError("a ckpt.Object is read-only")

    def __repr__(self):
        return f"ckpt.Object({self.class_name}, args={self.args!r}, state={self.state!r})"

    def __eq__(self, other):
        return isinstance(other, Object) and (self.class_name, self.args, self.state) == (
            other.class_name, other.args, other.state)

    __hash__ = None
