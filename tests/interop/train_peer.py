"""torch's side of the training interop tests (crates/ckpt-candle/tests/interop.rs).

    train_peer.py start DIR K
        train the reference MLP in torch for K steps on DIR/data.safetensors
        and write the tutorial-shaped checkpoint DIR/torch_k.pth
    train_peer.py demo-check CKPT
        load a `ckpt demo --format pth` checkpoint with weights_only=True
        into the equivalent torch model, torch.optim.AdamW and the demo's
        SequentialLR (strict), take one step, and check the loaded
        parameters equal the file's
    train_peer.py onnx-vs-torch PACKAGE.safetensors CKPT.onnx
        build the demo model in torch from the package's weights, export it
        with torch.onnx.export, and check that onnxruntime gives the same
        outputs for both files (and torch's) within 1e-5, batches 1 and 7
    train_peer.py continue DIR IN M OUT
        torch.load(IN, weights_only=True) (a checkpoint written by ckpt or by
        `start`), load model, AdamW and StepLR states, train M more steps and
        write the same kind of checkpoint to OUT

The model (Linear 6->16, ReLU, Linear 16->3), optimizer (AdamW lr 0.01),
scheduler (StepLR 5, 0.7) and batch order (step % 8, in order) are the
Rust test's.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

BATCH = 8


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 16)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def setup():
    torch.manual_seed(3)
    model = Mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.7)
    return model, opt, sched


def train(folder, model, opt, sched, start, steps):
    data = load_file(folder / "data.safetensors")
    x, y = data["x"], data["y"]
    batches = x.shape[0] // BATCH
    loss = None
    for step in range(start, start + steps):
        b = step % batches
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[b * BATCH : (b + 1) * BATCH]), y[b * BATCH : (b + 1) * BATCH])
        loss.backward()
        opt.step()
        sched.step()
    return {
        "epoch": (start + steps) // batches,
        "step": start + steps,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "scheduler_state_dict": sched.state_dict(),
        "loss": loss.item(),
    }


class DemoMlp(torch.nn.Module):
    """ckpt demo's spec, as torch: the same layers under the same names."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.act1 = torch.nn.ReLU()
        self.drop = torch.nn.Dropout(0.1)
        self.fc2 = torch.nn.Linear(128, 64)
        self.act2 = torch.nn.ReLU()
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.act2(self.fc2(self.drop(self.act1(self.fc1(x))))))


def demo_check(path):
    ckpt = torch.load(path, weights_only=True)
    model = DemoMlp()
    model.load_state_dict(ckpt["model_state_dict"], strict=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    opt.load_state_dict(ckpt["optimizer_state_dict"])
    L = torch.optim.lr_scheduler
    sched = L.SequentialLR(opt, [L.LinearLR(opt, 0.1, 1.0, 5), L.ExponentialLR(opt, 0.93)], milestones=[5])
    sched.load_state_dict(ckpt["scheduler_state_dict"])
    assert opt.state_dict()["state"][0]["step"].item() > 0, "no optimizer steps in the state"
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), ckpt["model_state_dict"][name]), name
    loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 64)), torch.arange(8))
    loss.backward()
    opt.step()
    sched.step()
    print(f"ok: epoch {ckpt['epoch']}, lr {opt.param_groups[0]['lr']:.6f}")


def onnx_vs_torch(package, ours):
    import tempfile
    import warnings

    import numpy as np
    import onnxruntime as ort

    weights = {k.removeprefix("model_state_dict/"): v for k, v in load_file(package).items()}
    model = DemoMlp()
    model.load_state_dict(weights, strict=True)
    model.eval()
    theirs = str(Path(tempfile.mkdtemp()) / "torch.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 64),), theirs, dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    sessions = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (ours, theirs)]
    for n in (1, 7):
        x = torch.rand(n, 64)
        with torch.no_grad():
            want = model(x).numpy()
        a, b = (s.run(None, {"input": x.numpy()})[0] for s in sessions)
        scale = max(float(np.abs(want).max()), 1e-6)
        for name, got in (("ckpt's export", a), ("torch.onnx.export", b)):
            worst = float(np.abs(got - want).max()) / scale
            assert worst <= 1e-5, f"{name} differs from torch by {worst:.2e} (batch {n})"
        worst = float(np.abs(a - b).max()) / scale
        assert worst <= 1e-5, f"the two exports differ by {worst:.2e} (batch {n})"
    print("ok: ckpt's export and torch.onnx.export agree")


def main():
    if sys.argv[1] == "onnx-vs-torch":
        onnx_vs_torch(sys.argv[2], sys.argv[3])
        return
    if sys.argv[1] == "demo-check":
        demo_check(sys.argv[2])
        return
    folder = Path(sys.argv[2])
    model, opt, sched = setup()
    if sys.argv[1] == "start":
        torch.save(train(folder, model, opt, sched, 0, int(sys.argv[3])), folder / "torch_k.pth")
    elif sys.argv[1] == "continue":
        ckpt = torch.load(folder / sys.argv[3], weights_only=True)
        model.load_state_dict(ckpt["model_state_dict"])
        opt.load_state_dict(ckpt["optimizer_state_dict"])
        sched.load_state_dict(ckpt["scheduler_state_dict"])
        torch.save(train(folder, model, opt, sched, ckpt["step"], int(sys.argv[4])), folder / sys.argv[5])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
