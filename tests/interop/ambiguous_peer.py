"""What the reference readers make of the hostile files (differential test).

For each .npy, .npz, .pth and .safetensors file of tests/fixtures/hostile/
(bombs and the malicious pickle left out), opens it with the reader people
use for it — numpy.load, torch.load(weights_only=True),
safetensors.numpy.load_file — and writes what it got as JSON: accepted or
not, and each tensor's shape and C-order bytes. ckpt's test
(crates/ckpt/tests/ambiguous.rs) then checks that where the reference
accepts a file, ckpt gives the same tensors or refuses it: never different
ones.

    python tests/interop/ambiguous_peer.py FOLDER OUT.json
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np


def arrays(path):
    suffix = path.suffix
    if suffix == ".npy":
        return "numpy.load", {"": np.load(path)}
    if suffix == ".npz":
        with np.load(path) as z:
            return "numpy.load", {k: z[k] for k in z.files}
    if suffix == ".pth":
        import torch
        state = torch.load(path, weights_only=True)
        return "torch.load", {k: v.numpy() for k, v in state.items()}
    from safetensors.numpy import load_file
    return "safetensors", load_file(path)


def main():
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    report = {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".npy", ".npz", ".pth", ".safetensors"):
            continue
        if path.name.startswith(("bomb_", "pickle_of_nones", "malicious")):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reader, got = arrays(path)
            tensors = {k: {"shape": list(a.shape), "hex": np.ascontiguousarray(a).tobytes().hex()}
                       for k, a in got.items()}
            report[path.name] = {"reader": reader, "accepted": True, "tensors": tensors}
        except Exception as e:  # noqa: BLE001 - any refusal is a refusal
            report[path.name] = {"accepted": False, "error": f"{type(e).__name__}: {e}"[:200]}
        print(f"{path.name}: {'accepted' if report[path.name]['accepted'] else 'refused'}")
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
