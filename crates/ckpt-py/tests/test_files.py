"""ckpt.save / ckpt.load against torch.save / torch.load(weights_only=True)
on the same trees, both ways, every dtype; NumPy mode; the folders and
fixtures ckpt reads; errors as ckpt.CkptError."""

import json
import random
import subprocess
import warnings
from pathlib import Path

import numpy
import pytest
import torch

import ckpt

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"

DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
    torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2,
]


def random_tensor(rng, dtype):
    shape = tuple(rng.randint(0, 4) for _ in range(rng.randint(0, 3)))
    bits = torch.randint(0, 256, (int(numpy.prod(shape)) * dtype.itemsize,), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(rng.randint(0, 1 << 30)))
    if dtype is torch.bool:
        return (bits[: int(numpy.prod(shape))] & 1).bool().reshape(shape)
    return bits.view(dtype).reshape(shape)


def random_tree(rng, depth=0):
    kinds = ["none", "bool", "int", "float", "str", "tensor"] + (["list", "tuple", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(1 << 62), 1 << 62)
    if kind == "float":
        return rng.uniform(-1e6, 1e6)
    if kind == "str":
        return "".join(rng.choice("abcü_ 0") for _ in range(rng.randint(0, 6)))
    if kind == "tensor":
        return random_tensor(rng, rng.choice(DTYPES))
    items = [random_tree(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    return {(f"k{i}" if rng.random() < 0.7 else i): v for i, v in enumerate(items)}


def same(a, b, at="root"):
    """Raises unless a and b are the same tree: same types, key types,
    dtypes, shapes and bits."""
    assert type(a) is type(b), f"{at}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{at}: {a.dtype}{tuple(a.shape)} != {b.dtype}{tuple(b.shape)}"
        bits = lambda t: t.reshape(-1).view(torch.uint8) if t.numel() else t.reshape(-1)
        assert torch.equal(bits(a), bits(b)), f"{at}: values differ"
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), f"{at}: keys {list(a)} != {list(b)}"
        for k in a:
            same(a[k], b[k], f"{at}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{at}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{at}[{i}]")
    else:
        assert a == b, f"{at}: {a!r} != {b!r}"


@pytest.mark.parametrize("seed", range(20))
def test_ckpt_save_is_what_torch_load_reads_and_back(tmp_path, seed):
    rng = random.Random(seed)
    tree = {f"t{i}": random_tree(rng) for i in range(6)}
    ours = tmp_path / "ours.pth"
    ckpt.save(tree, ours)
    same(torch.load(ours, weights_only=True), tree)
    theirs = tmp_path / "theirs.pth"
    torch.save(tree, theirs)
    same(ckpt.load(theirs), torch.load(theirs, weights_only=True))
    same(ckpt.load(ours, mmap=False), tree)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_round_trips_through_safetensors(tmp_path, dtype):
    t = random_tensor(random.Random(7), dtype)
    path = tmp_path / "t.safetensors"
    ckpt.save({"t": t, "step": 3}, path)
    same(ckpt.load(path), {"t": t, "step": 3})


def test_numpy_arrays_in_and_out(tmp_path):
    arrays = {"a": numpy.arange(12, dtype=numpy.float32).reshape(3, 4), "b": numpy.array([True, False])}
    path = tmp_path / "a.npz"
    ckpt.save(arrays, path)
    back = ckpt.load(path, tensors="numpy")
    assert set(back) == {"a", "b"}
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype and numpy.array_equal(back[k], arrays[k])
    with pytest.raises(ckpt.CkptError, match="needs torch"):
        p = tmp_path / "bf16.safetensors"
        ckpt.save({"x": torch.zeros(2, dtype=torch.bfloat16)}, p)
        ckpt.load(p, tensors="numpy")


def test_folders_and_fixtures_ckpt_reads(tmp_path):
    dcp = ckpt.load(FIXTURES / "dcp" / "ranks4_dim1")
    same(dcp, ckpt.load(FIXTURES / "dcp" / "ranks4_dim1.expected.pth"))
    flat = ckpt.load_state_dict(FIXTURES / "pth" / "checkpoint.pth")
    assert flat and all(isinstance(v, torch.Tensor) for v in flat.values())


def test_errors_are_ckpt_errors_naming_the_file(tmp_path):
    with pytest.raises(ckpt.CkptError, match="missing.pth"):
        ckpt.load(tmp_path / "missing.pth")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(ckpt.CkptError, match="bad.safetensors"):
        ckpt.load(bad)
    with pytest.raises(ckpt.UnsafeFileError, match="malicious.pth"):
        ckpt.load(FIXTURES / "hostile" / "malicious.pth")
    with pytest.raises(TypeError, match="set"):
        ckpt.save({"x": {1, 2}}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match="key"):
        ckpt.save({(1, 2): 3}, tmp_path / "x.pth")


def mapping_of(address):
    """The file mapped at `address` in this process, or None."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 else None
    return None


def test_loads_are_zero_copy_views_of_a_private_map(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save({"w": torch.arange(1 << 16, dtype=torch.float32)}, path)
    before = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not writable" warning from torch
        a = ckpt.load(path)["w"]
        b = ckpt.load(path)["w"]
    a += 1  # writing to a loaded tensor ...
    assert path.read_bytes() == before  # ... never touches the file
    assert torch.equal(b, torch.arange(1 << 16, dtype=torch.float32))
    # The tensor's memory is the file's map (Linux says where maps are).
    assert mapping_of(a.data_ptr()) == str(path)
    del b
    assert float(a[10]) == 11.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        owned = ckpt.load(path, mmap=False)["w"]
        owned[0] = 5
        arr = ckpt.load(path, tensors="numpy")["w"]
        arr[0] = 7
    assert path.read_bytes() == before


def test_tensors_stored_at_odd_offsets_come_back_aligned(tmp_path):
    path = tmp_path / "odd.npz"
    arrays = {"x" * n: numpy.arange(7, dtype=numpy.float64) * n for n in range(1, 9)}
    numpy.savez(path, **arrays)  # stored members: data at whatever offset the names leave
    for name, t in ckpt.load(path).items():
        assert t.data_ptr() % 8 == 0, name
        assert torch.equal(t, torch.from_numpy(arrays[name]))


def test_saves_take_any_layout_and_write_from_the_tensors(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tree = {
        "transposed": base.t(),  # not contiguous: made contiguous once
        "slice": base[1:3, ::2],
        "conj": torch.tensor([1 + 2j, 3 - 1j]).conj(),
        "grad": torch.ones(3, requires_grad=True) * 2,
        "empty": torch.zeros(0, 5),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "be": numpy.arange(4, dtype=">i4"),
        "view": base[2],  # shares storage with "transposed"
    }
    path = tmp_path / "t.pth"
    ckpt.save(tree, path)
    back = torch.load(path, weights_only=True)
    for k, v in tree.items():
        expected = torch.from_numpy(v.astype("<i4")) if isinstance(v, numpy.ndarray) else v.detach().resolve_conj()
        assert back[k].dtype == expected.dtype and torch.equal(back[k], expected), k


def test_map_location_moves_every_tensor(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"a": torch.ones(2), "n": [torch.zeros(1)], "x": 3}, path)
    for where in ("meta", torch.device("meta"), {"cuda:0": "meta", "cpu": "meta"}):
        back = ckpt.load(path, map_location=where)
        assert back["a"].device.type == "meta" and back["n"][0].device.type == "meta" and back["x"] == 3
    assert ckpt.load(path, map_location="cpu")["a"].device.type == "cpu"
    assert ckpt.load_state_dict(path, map_location="meta")["a"].device.type == "meta"
    with pytest.raises(ValueError, match="one device"):
        ckpt.load(path, map_location={"cuda:0": "cpu", "cuda:1": "meta"})
    with pytest.raises(TypeError):
        ckpt.load(path, map_location=lambda storage, loc: storage)
    with pytest.raises(ValueError, match="torch"):
        ckpt.load(path, map_location="cpu", tensors="numpy")
    if torch.cuda.is_available():
        back = ckpt.load(path, map_location="cuda")
        assert back["a"].is_cuda and torch.equal(back["a"].cpu(), torch.ones(2))



def test_verify_compares_the_stored_checksums(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"w": torch.arange(64.0)}, path)
    report = ckpt.verify(path)
    assert report["format"] == "pytorch" and report["tensors"] == 1
    assert report["checksums"] >= 1 and report["mismatches"] == []
    # A flipped bit in the tensor's bytes: the zip CRC-32 no longer
    # matches; the file still loads, as in torch.
    data = bytearray(path.read_bytes())
    at = data.index(torch.arange(64.0)[10:12].numpy().tobytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))
    assert any("data/0" in m for m in ckpt.verify(path)["mismatches"])
    with pytest.raises(ckpt.CkptError, match="nothing.pth"):
        ckpt.verify(tmp_path / "nothing.pth")


def test_inert_objects_come_back_as_read_only_ckpt_objects(tmp_path):
    ns = ckpt.load(FIXTURES / "pth" / "namespace.pth")  # torch.save(argparse.Namespace(lr=0.1))
    assert isinstance(ns, ckpt.Object)
    assert (ns.class_name, ns.args, ns.state) == ("argparse.Namespace", (), {"lr": 0.1})
    with pytest.raises(AttributeError):
        ns.class_name = "os.system"
    # Written back as it was read, beside tensors.
    path = tmp_path / "ns.safetensors"
    ckpt.save({"args": ns, "w": torch.ones(2)}, path)
    back = ckpt.load(path)
    assert back["args"] == ns and torch.equal(back["w"], torch.ones(2))
    # In a .pth it becomes the plain dict torch.load(weights_only=True) opens.
    ckpt.save({"args": ns}, tmp_path / "ns.pth")
    assert torch.load(tmp_path / "ns.pth", weights_only=True) == {"args": {"__class__": "argparse.Namespace", "lr": 0.1}}


def cli_json(*args):
    cli = ROOT / "target" / "debug" / "ckpt"
    if not cli.exists():
        pytest.skip("build the ckpt command first (cargo build)")
    out = subprocess.run([cli, *map(str, args)], capture_output=True, text=True)
    return json.loads(out.stdout)


def test_inspect_is_what_the_command_prints():
    for path in (FIXTURES / "pth" / "checkpoint.pth", FIXTURES / "pth" / "namespace.pth",
                 FIXTURES / "dcp" / "ranks2_dim0", FIXTURES / "wild" / "lightning.ckpt"):
        report = ckpt.inspect(path)
        assert report == cli_json("inspect", "--json", path), path
    report = ckpt.inspect(FIXTURES / "pth" / "checkpoint.pth")
    assert report["format"] == "pytorch" and report["total_bytes"] == sum(t["bytes"] for t in report["tensors"])
    assert report["python"]["weights_only"] is True
    with pytest.raises(ckpt.CkptError, match="nothing.pth"):
        ckpt.inspect("nothing.pth")


def test_diff_and_convert_as_the_command_does(tmp_path):
    src = FIXTURES / "pth" / "checkpoint.pth"
    half = tmp_path / "half.safetensors"
    done = ckpt.convert(src, half, dtype=torch.float16)
    assert done["read_as"] == "pytorch" and done["written_as"] == "safetensors" and done["tensors"] > 0
    report = ckpt.diff(src, half, atol=1e-2)
    assert report == cli_json("diff", "--json", "--atol", "0.01", src, half)
    assert not report["equal"] and all(t["a"] != t["b"] for t in report["tensors"] if t["a"])
    same_file = tmp_path / "same.pth"
    ckpt.convert(src, same_file)
    assert ckpt.diff(src, same_file)["equal"]
    # Folders both ways: a DCP folder torch wrote, streamed to one file, and written as DCP.
    flat = tmp_path / "dcp.safetensors"
    assert ckpt.convert(FIXTURES / "dcp" / "ranks4_dim1", flat)["read_as"] == "dcp"
    assert ckpt.diff(flat, FIXTURES / "dcp" / "ranks4_dim1.expected.pth")["equal"]
    ckpt.convert(src, tmp_path / "out_dcp", format="dcp")
    assert ckpt.diff(src, tmp_path / "out_dcp")["equal"]
    prefixed = tmp_path / "prefixed.pth"
    torch.save({"module.fc.weight": torch.ones(2)}, prefixed)
    ckpt.convert(prefixed, tmp_path / "stripped.safetensors", strip_prefix="module.")
    assert list(ckpt.load(tmp_path / "stripped.safetensors")) == ["fc.weight"]
    # A whole pickled model (torch.save(model)) as a model package.
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    torch.save(model, tmp_path / "model.pth")
    assert ckpt.convert(tmp_path / "model.pth", tmp_path / "pkg.pth", package=True)["written_as"] == "PyTorch model package"
    pkg = ckpt.load(tmp_path / "pkg.pth")
    assert json.loads(pkg["spec"])["layers"][0]["type"] == "Linear"
    assert torch.equal(pkg["model_state_dict"]["0.weight"], model[0].weight.detach())
    with pytest.raises(ckpt.CkptError, match="torch.save"):
        ckpt.convert(src, tmp_path / "y.pth", package=True)
    with pytest.raises(ValueError, match="format"):
        ckpt.convert(src, tmp_path / "x", format="onnx")
    with pytest.raises(ValueError, match="float"):
        ckpt.convert(src, tmp_path / "x.pth", dtype="int8")
    with pytest.raises(ckpt.CkptError, match="missing.pth"):
        ckpt.convert(tmp_path / "missing.pth", tmp_path / "x.pth")
