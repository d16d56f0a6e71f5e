"""The PyTorch tutorial's CheckpointManager example, with ckpt.

A small classifier trained on the CPU, checkpointed every epoch into a run
directory by `ckpt.CheckpointManager`: model, optimizer, scheduler, epoch
and the random generators' states, committed in the background while the
next epoch trains. Kill it at any instant (Ctrl-C, `kill -9`, a power cut
with the default durable saves) and run it again: it resumes from the
newest intact checkpoint and ends with the same weights, bit for bit, as a
run that was never interrupted.

    python examples/pytorch_training.py runs/example --epochs 20
    ckpt ls runs/example
"""

import argparse

import torch
from torch import nn

import ckpt


def data(n=512, features=16, classes=4):
    """A fixed synthetic dataset (the same on every run)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, classes, generator=g)
    y = (x @ w + 0.1 * torch.randn(n, classes, generator=g)).argmax(dim=1)
    return x[: n * 3 // 4], y[: n * 3 // 4], x[n * 3 // 4 :], y[n * 3 // 4 :]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="the run directory (or s3://bucket/prefix)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x, y, x_val, y_val = data()
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.7)
    shuffle = torch.Generator().manual_seed(1)

    mgr = ckpt.CheckpointManager(args.run, keep_last=3, keep_best=1, metric="val_loss", mode="min")
    start = 0
    state = mgr.restore_latest()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = state["epoch"] + 1
        for step, why in state.fallback:
            print(f"step {step} did not load ({why}); resumed from an older one")
    print(f"ready: epoch {start}", flush=True)

    for epoch in range(start, args.epochs):
        model.train()
        for batch in torch.randperm(len(x), generator=shuffle).split(32):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        with torch.no_grad():
            val_loss = nn.functional.cross_entropy(model(x_val), y_val).item()
        mgr.save_async(
            epoch,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "shuffle_rng": shuffle.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
            },
            metrics={"val_loss": val_loss},
        )
        if not args.quiet:
            print(f"epoch {epoch}: val_loss {val_loss:.4f}", flush=True)
    mgr.wait()
    print(f"done: best step {mgr.best()}", flush=True)
    mgr.close()


if __name__ == "__main__":
    main()
