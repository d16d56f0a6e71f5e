"""The real peers' side of ckpt's interop tests: Python safetensors and torch.

    peer.py check DIR   verify every file listed in DIR/manifest.json, written
                        by ckpt, loads in the Python safetensors package with
                        exactly the listed dtypes, shapes, bytes and metadata
    peer.py write DIR N SEED
                        write N random state dicts with safetensors.torch and
                        a DIR/manifest.json describing them, for ckpt to read
    peer.py check-pth DIR
                        torch.load(weights_only=True) every file listed in
                        DIR/manifest.json (written by ckpt) and compare it with
                        the description there
    peer.py check-numpy DIR
                        numpy.load(allow_pickle=False) every .npy/.npz file
                        listed in DIR/manifest.json (written by ckpt) and compare
                        dtypes, shapes and bytes with the description there
    peer.py check-onnx DIR
                        for every model in DIR/onnx.json (exported by ckpt):
                        onnx.checker.check_model(full_check=True), then
                        onnxruntime on each listed input, compared with
                        ckpt's own outputs (within 1e-5 of their scale, or
                        the entry's "tolerance": a quantized model's error)
    peer.py check-torchscript DIR
                        for every model in DIR/torchscript.json (exported by
                        ckpt): torch.jit.load, state_dict() equal to the
                        package's weights, outputs within 1e-5 of ckpt's
    peer.py write-pth DIR N SEED
                        torch.save N random checkpoint trees and describe them
                        in DIR/manifest.json, for ckpt to read

Manifest: {file: {"tensors": {name: {"dtype", "shape", "hex"}}, "metadata": {..}}},
dtypes by their torch names, bytes as little-endian hex.
"""

import json
import math
import random
import struct
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DTYPES = {
    name: getattr(torch, name)
    for name in [
        "float64", "float32", "float16", "bfloat16", "float8_e4m3fn",
        "float8_e5m2", "int64", "int32", "int16", "int8", "uint8", "bool",
    ]
}


def tensor_hex(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes().hex()


def describe(t):
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "hex": tensor_hex(t)}


def check(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    for file, want in manifest.items():
        path = folder / file
        got = {name: describe(t) for name, t in load_file(path).items()}
        assert got == want["tensors"], f"{file}: tensors differ\n got {got}\nwant {want['tensors']}"
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            for key, value in want["metadata"].items():
                assert meta.get(key) == value, f"{file}: metadata {key!r} is {meta.get(key)!r}, want {value!r}"
            assert sorted(f.keys()) == sorted(want["tensors"]), f"{file}: keys differ"
        print(f"ok {file}: {len(got)} tensors")


def random_tensor(rng, dtype):
    shape = [rng.randint(0, 4) for _ in range(rng.randint(0, 3))]
    numel = 1
    for d in shape:
        numel *= d
    if dtype is torch.bool:
        return torch.randint(0, 2, shape, dtype=torch.uint8).to(torch.bool)
    size = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (numel * size,), dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


def write(folder, count, seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    manifest = {}
    for i in range(count):
        tensors = {}
        for j in range(rng.randint(0, 8)):
            dtype = DTYPES[rng.choice(sorted(DTYPES))]
            tensors[f"layer{j}.{rng.choice(['weight', 'bias', 'running_mean'])}"] = random_tensor(rng, dtype)
        metadata = {"format": "pt", "seed": str(seed), "index": str(i)}
        name = f"peer-{i}.safetensors"
        save_file(tensors, folder / name, metadata=metadata)
        manifest[name] = {"tensors": {k: describe(v) for k, v in tensors.items()}, "metadata": metadata}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {count} files")


def describe_tree(obj):
    """An exact JSON description of a loaded tree: floats by their bits,
    tensors by dtype, shape and bytes, tuples apart from lists, int keys
    apart from str keys. ckpt's tests build the same description."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return {"int": str(obj)}
    if isinstance(obj, float):
        return {"float": struct.pack(">d", obj).hex()}
    if isinstance(obj, bytes):
        return {"bytes": obj.hex()}
    if isinstance(obj, torch.Tensor):
        return {"tensor": describe(obj)}
    if isinstance(obj, tuple):
        return {"tuple": [describe_tree(v) for v in obj]}
    if isinstance(obj, list):
        return {"list": [describe_tree(v) for v in obj]}
    if isinstance(obj, dict):
        return {"dict": [[k if isinstance(k, str) else {"int": str(k)}, describe_tree(v)] for k, v in obj.items()]}
    raise TypeError(f"cannot describe {type(obj)}")


def check_pth(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    for file, want in manifest.items():
        got = describe_tree(torch.load(folder / file, weights_only=True))
        assert got == want, f"{file}: torch.load differs\n got {json.dumps(got)[:2000]}\nwant {json.dumps(want)[:2000]}"
        print(f"ok {file}")


def check_numpy(folder):
    import numpy as np
    manifest = json.loads((folder / "manifest.json").read_text())
    for file, want in manifest.items():
        loaded = np.load(folder / file, allow_pickle=False)
        arrays = {"": loaded} if file.endswith(".npy") else {k: loaded[k] for k in loaded.files}
        got = {k: {"dtype": str(torch.from_numpy(a.copy()).dtype).removeprefix("torch."), "shape": list(a.shape),
                   "hex": np.ascontiguousarray(a).tobytes().hex()} for k, a in arrays.items()}
        assert got == want, f"{file}: numpy.load differs\n got {got}\nwant {want}"
        print(f"ok {file}")


def random_tree(rng, depth=0):
    kinds = ["none", "bool", "int", "float", "str", "bytes", "tensor"]
    if depth < 3:
        kinds += ["list", "tuple", "dict", "dict"]
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, 255, 256, 65535, 65536, -1, -(2**31), 2**31, 2**62, -(2**63), rng.randint(-(2**63), 2**63 - 1)])
    if kind == "float":
        return rng.choice([0.0, -0.0, 0.1, 1e-300, -1e300, math.inf, -math.inf, rng.uniform(-10, 10)])
    if kind == "str":
        return rng.choice(["", "lr", "ünïcode", "a/b", "x" * 300])
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 6)))
    if kind == "tensor":
        return random_tensor(rng, DTYPES[rng.choice(sorted(DTYPES))])
    items = [random_tree(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    return {rng.choice([f"k{i}", i]): v for i, v in enumerate(items)}


def write_pth(folder, count, seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    manifest = {}
    for i in range(count):
        tree = {"epoch": i, "tree": random_tree(rng)}
        name = f"peer-{i}.pth"
        torch.save(tree, folder / name)
        manifest[name] = describe_tree(tree)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    print(f"wrote {count} files")


def check_onnx(folder):
    import numpy as np
    import onnx
    import onnxruntime as ort

    manifest = json.loads((folder / "onnx.json").read_text())
    for entry in manifest:
        path = folder / entry["onnx"]
        onnx.checker.check_model(str(path), full_check=True)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for pair in entry["runs"]:
            x = np.load(folder / pair["input"])
            want = np.load(folder / pair["output"])
            got = session.run(None, {name: x})[0]
            assert got.shape == want.shape, f"{path.name}: shape {got.shape} vs ckpt {want.shape}"
            scale = max(float(np.abs(want).max()), 1e-6)
            worst = float(np.abs(got - want).max())
            # A quantized model may differ by ckpt's own quantization error.
            allowed = max(1e-5 * scale, entry.get("tolerance", 0.0))
            assert worst <= allowed, f"{path.name} on {pair['input']}: onnxruntime differs from ckpt by {worst:.2e} (allowed {allowed:.2e})"
            if entry.get("tolerance", 0.0) > 0:
                print(f"{path.name} on {pair['input']}: onnxruntime vs ckpt {worst:.2e}, ckpt's quantization error {entry['tolerance']:.2e}")
    print(f"checked {len(manifest)} models")


def check_torchscript(folder):
    """Every TorchScript file in DIR/torchscript.json loads in torch.jit.load,
    in eval mode, its state_dict() equal to the package's weights (names,
    dtypes, values), its outputs within 1e-5 of ckpt's, its extra/ckpt.json
    holding the spec."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    manifest = json.loads((folder / "torchscript.json").read_text())
    for entry in manifest:
        path = folder / entry["file"]
        extra = {"ckpt.json": ""}
        m = torch.jit.load(str(path), _extra_files=extra)
        assert not m.training, f"{path.name}: loaded in training mode"
        assert json.loads(extra["ckpt.json"])["spec"]["name"] == entry["name"], path.name
        want = load_file(str(folder / entry["weights"]))
        got = m.state_dict()
        assert sorted(got) == sorted(want), f"{path.name}: state_dict {sorted(got)} vs package {sorted(want)}"
        for k, t in want.items():
            assert got[k].dtype == t.dtype and torch.equal(got[k], t), f"{path.name}: {k} differs"
        for pair in entry["runs"]:
            x = torch.from_numpy(np.load(folder / pair["input"]))
            want_y = np.load(folder / pair["output"])
            with torch.no_grad():
                y = m(x).numpy()
            assert y.shape == want_y.shape, f"{path.name}: shape {y.shape} vs ckpt {want_y.shape}"
            worst = float(np.abs(y - want_y).max())
            allowed = 1e-5 * max(float(np.abs(want_y).max()), 1.0)
            assert worst <= allowed, f"{path.name} on {pair['input']}: torch.jit.load differs from ckpt by {worst:.2e}"
    print(f"checked {len(manifest)} TorchScript files")


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(Path(sys.argv[2]))
    elif sys.argv[1] == "write":
        write(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "check-pth":
        check_pth(Path(sys.argv[2]))
    elif sys.argv[1] == "check-numpy":
        check_numpy(Path(sys.argv[2]))
    elif sys.argv[1] == "check-onnx":
        check_onnx(Path(sys.argv[2]))
    elif sys.argv[1] == "check-torchscript":
        check_torchscript(Path(sys.argv[2]))
    elif sys.argv[1] == "write-pth":
        write_pth(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
