"""ckpt.CheckpointManager from Python: retention, best, fallback past a
damaged step, background saves, incremental runs, errors, the layout the
`ckpt` command reads, an s3:// run on a moto server, and a training loop
killed with SIGKILL at random instants that resumes bit-identical."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ckpt
from test_files import random_tree, same

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "pytorch_training.py"


def state(step, size=4):
    g = torch.Generator().manual_seed(step)
    return {
        "model": {"fc.weight": torch.randn(size, size, generator=g), "fc.bias": torch.zeros(size)},
        "optimizer": {"state": {0: {"step": torch.tensor(float(step)), "exp_avg": torch.ones(size)}},
                      "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1]}]},
        "epoch": step,
        "note": "kept as saved",
    }


def test_save_restore_and_load_give_back_the_tree(tmp_path):
    rng = random.Random(7)
    trees = {s: {"t": random_tree(rng), "model": state(s)["model"]} for s in (1, 2)}
    with ckpt.CheckpointManager(tmp_path / "run") as mgr:
        assert mgr.restore_latest() is None
        for s, tree in trees.items():
            report = mgr.save(s, tree)
            assert report["step"] == s and report["bytes"] > 0 and report["deleted"] == []
        restored = mgr.restore_latest()
        assert (restored.step, restored.fallback) == (2, [])
        same(dict(restored), trees[2])
        same(mgr.load(1), trees[1])
        assert [s["step"] for s in mgr.steps()] == [1, 2] and mgr.latest() == 2


def test_every_format_round_trips(tmp_path):
    for fmt in ("safetensors", "pth", "ckptz"):
        with ckpt.CheckpointManager(tmp_path / fmt, format=fmt) as mgr:
            mgr.save(3, state(3))
            same(mgr.load(3), state(3))
        files = list((tmp_path / fmt).glob("step-*/checkpoint.*"))
        assert [f.suffix for f in files] == ["." + fmt]
    # The .pth a run holds is torch's own format.
    same(torch.load(files_of(tmp_path / "pth")[0], weights_only=True), state(3))


def files_of(run):
    return sorted(run.glob("step-*/checkpoint.*"))


def test_retention_keeps_last_best_and_every(tmp_path):
    losses = {s: abs(s - 4) + 0.5 for s in range(10)}
    with ckpt.CheckpointManager(tmp_path / "run", keep_last=2, keep_best=2, metric="loss",
                                keep_every=5) as mgr:
        deleted = []
        for s in range(10):
            deleted += mgr.save(s, state(s), metrics={"loss": losses[s]})["deleted"]
        kept = [s["step"] for s in mgr.steps()]
        # last 2: 8, 9; best 2 by loss: 4 (0.5), 3 or 5 (1.5, the newer wins ties or not); every 5: 0, 5.
        assert {0, 4, 5, 8, 9} <= set(kept) and len(kept) <= 6, kept
        assert sorted(deleted + kept) == list(range(10))
        assert mgr.best() == 4
        assert mgr.steps()[0]["metrics"] == {"loss": losses[kept[0]]}
        same(mgr.load(mgr.best()), state(4))
    with ckpt.CheckpointManager(tmp_path / "max", keep_last=1, keep_best=1, metric="acc", mode="max") as mgr:
        for s, acc in enumerate([0.5, 0.9, 0.7]):
            mgr.save(s, state(s), metrics={"acc": acc})
        assert [s["step"] for s in mgr.steps()] == [1, 2] and mgr.best() == 1


def test_gc_applies_the_rules_now(tmp_path):
    with ckpt.CheckpointManager(tmp_path / "run", keep_last=5) as mgr:
        for s in range(5):
            mgr.save(s, state(s))
    with ckpt.CheckpointManager(tmp_path / "run", keep_last=2) as mgr:
        assert mgr.gc(dry_run=True) == [0, 1, 2]
        assert len(mgr.steps()) == 5
        assert mgr.gc() == [0, 1, 2]
        assert [s["step"] for s in mgr.steps()] == [3, 4]
        assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == ["step-00000003", "step-00000004"]


def test_a_damaged_newest_step_falls_back_and_says_so(tmp_path):
    run = tmp_path / "run"
    with ckpt.CheckpointManager(run) as mgr:
        for s in (1, 2, 3):
            mgr.save(s, state(s))
    newest = files_of(run)[-1]
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0x40
    newest.write_bytes(bytes(data))
    with ckpt.CheckpointManager(run) as mgr:
        restored = mgr.restore_latest()
        assert restored.step == 2
        assert [s for s, _ in restored.fallback] == [3]
        assert "hash" in restored.fallback[0][1]
        same(dict(restored), state(2))
        with pytest.raises(ckpt.IntegrityError, match="step-00000003"):
            mgr.load(3)
    for f in files_of(run):
        f.write_bytes(b"garbage")
    with ckpt.CheckpointManager(run) as mgr:
        with pytest.raises(ckpt.IntegrityError, match="step 1.*step 2|step 3"):
            mgr.restore_latest()


def test_save_async_snapshots_and_commits_in_the_background(tmp_path):
    with ckpt.CheckpointManager(tmp_path / "run", keep_last=10) as mgr:
        s = state(1, size=512)
        expected = {k: v.clone() for k, v in s["model"].items()}
        assert mgr.save_async(1, s, metrics={"loss": 1.0}) is True
        s["model"]["fc.weight"].zero_()  # training goes on changing the model
        report = mgr.wait()
        assert report["step"] == 1 and mgr.wait() is None
        same(mgr.load(1)["model"], expected)
        for step in range(2, 6):
            mgr.save_async(step, state(step, size=256))
        mgr.save(6, state(6))  # waits for the one in flight
        assert [x["step"] for x in mgr.steps()] == [1, 2, 3, 4, 5, 6]
        for step in range(2, 7):
            same(mgr.load(step), state(step, size=256 if step < 6 else 4))


def test_a_failed_background_save_is_raised_by_the_next_call(tmp_path):
    with ckpt.CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, state(1))
        mgr.save_async(1, state(1))  # the step exists: fails in the background
        with pytest.raises(ckpt.StepError, match="step 1"):
            mgr.wait()


def test_incremental_runs_write_only_what_changed(tmp_path):
    big = torch.arange(4 << 20, dtype=torch.float32)  # 16 MiB: 4 chunks
    with ckpt.CheckpointManager(tmp_path / "run", incremental=True) as mgr:
        first = mgr.save(1, {"model": {"frozen": big, "head": torch.zeros(8)}, "epoch": 1})
        second = mgr.save(2, {"model": {"frozen": big, "head": torch.ones(8)}, "epoch": 2})
        assert first["written"] >= big.numel() * 4
        assert second["written"] < 1 << 20, second
        same(mgr.load(2)["model"]["head"], torch.ones(8))
        assert torch.equal(mgr.load(1)["model"]["frozen"], big)


def test_incremental_saves_see_tensors_changed_in_place(tmp_path):
    # The same tensor objects, changed in place between saves (what
    # optimizer.step() does): every save must store what they hold then.
    w = torch.zeros(1 << 20)
    with ckpt.CheckpointManager(tmp_path / "run", incremental=True, keep_last=5) as mgr:
        for step in range(3):
            mgr.save(step, {"model": {"w": w}})
            w.add_(1)
        for step in range(3):
            assert torch.equal(mgr.load(step)["model"]["w"], torch.full((1 << 20,), float(step)))


def test_errors_raise_the_right_exceptions(tmp_path):
    run = tmp_path / "run"
    with ckpt.CheckpointManager(run) as mgr:
        mgr.save(1, state(1))
        with pytest.raises(ckpt.StepError, match="1"):
            mgr.save(1, state(1))
        with pytest.raises(ckpt.StepError):
            mgr.load(99)
        with pytest.raises(ckpt.LockedError):
            ckpt.CheckpointManager(run)
        with pytest.raises(TypeError, match="set"):
            mgr.save(2, {"bad": {1, 2}})
        with pytest.raises(TypeError, match="a checkpoint is a dict"):
            mgr.save(2, [torch.ones(1)])
        with pytest.raises(ValueError, match="no step"):
            mgr.load(mgr.best())
    with pytest.raises(RuntimeError, match="closed"):
        mgr.save(3, state(3))
    with pytest.raises(ValueError, match="metric"):
        ckpt.CheckpointManager(tmp_path / "x", keep_best=1)
    with pytest.raises(ValueError, match="mode"):
        ckpt.CheckpointManager(tmp_path / "x", keep_best=1, metric="loss", mode="lowest")
    with pytest.raises(ValueError, match="format"):
        ckpt.CheckpointManager(tmp_path / "x", format="onnx")
    with ckpt.CheckpointManager(tmp_path / "strict", keep_best=1, metric="loss", missing="error") as mgr:
        with pytest.raises(ckpt.CkptError, match="loss"):
            mgr.save(1, state(1))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ckpt.CkptError, match="file"):
        ckpt.CheckpointManager(tmp_path / "file")


def test_the_ckpt_command_reads_the_run(tmp_path):
    cli = ROOT / "target" / "debug" / "ckpt"
    if not cli.exists():
        pytest.skip("build the ckpt command first (cargo build)")
    run = tmp_path / "run"
    with ckpt.CheckpointManager(run, keep_best=1, metric="val_loss") as mgr:
        for s in range(4):
            mgr.save(s, state(s), metrics={"val_loss": 1.0 / (s + 1)})
    out = subprocess.run([cli, "ls", run], capture_output=True, text=True, check=True).stdout
    assert "val_loss" in out and "3 steps" in out, out
    check = subprocess.run([cli, "verify", run], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def moto():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, ROOT / "tests/interop/moto_server.py", str(port), "ckpt-py"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    env = {"AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true",
           "AWS_ACCESS_KEY_ID": "ckpt", "AWS_SECRET_ACCESS_KEY": "ckpt", "AWS_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield port
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stdin.close()
    server.wait(timeout=30)


def test_an_s3_run_on_moto(moto):
    url = "s3://ckpt-py/runs/exp1"
    with ckpt.CheckpointManager(url, keep_last=2) as mgr:
        for s in range(3):
            mgr.save(s, state(s), metrics={"loss": float(s)})
        mgr.save_async(3, state(3))
        mgr.wait()
        assert [x["step"] for x in mgr.steps()] == [2, 3]
    with ckpt.CheckpointManager(url, keep_last=2) as mgr:
        restored = mgr.restore_latest()
        assert restored.step == 3
        same(dict(restored), state(3))
    same(ckpt.load(url + "/step-00000002/checkpoint.safetensors"), state(2))


ZYGOTE = r"""
import importlib.util, os, signal, sys, tempfile, time, traceback
import torch, ckpt  # imported once; every run is a fork of this process
spec = importlib.util.spec_from_file_location("example", sys.argv[1])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
# One epoch first, so that what torch imports on first use is imported here
# (about a second), not in every run.
null = os.open(os.devnull, os.O_WRONLY)
out = os.dup(1)
os.dup2(null, 1)
with tempfile.TemporaryDirectory() as warm:
    sys.argv = ["pytorch_training.py", os.path.join(warm, "run"), "--epochs", "1", "--quiet"]
    example.main()
sys.stdout.flush()
os.dup2(out, 1)
for line in sys.stdin:
    kill_after, *args = line.split()
    pid = os.fork()
    if pid == 0:
        os.dup2(null, 1)
        sys.argv = ["pytorch_training.py"] + args
        try:
            example.main()
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        os._exit(code)
    # Killed here, before it is reaped: its pid cannot belong to anyone else.
    deadline = time.monotonic() + float(kill_after) if kill_after != "-" else None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = None
        time.sleep(0.0005)
    print(status, flush=True)
"""


class Runs:
    """Runs of examples/pytorch_training.py, each forked from one process
    that imported torch once, so a kill costs milliseconds, not an import."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, "-c", ZYGOTE, EXAMPLE], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)

    def run(self, args, kill_after=None):
        """The run's wait status; with `kill_after`, SIGKILLed after that many seconds."""
        when = "-" if kill_after is None else f"{kill_after:.6f}"
        self.p.stdin.write(" ".join([when, *map(str, args)]) + "\n")
        self.p.stdin.flush()
        return int(self.p.stdout.readline())

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def committed(run):
    path = run / "manifest.json"
    steps = json.loads(path.read_text())["steps"] if path.exists() else []
    return steps[-1]["step"] if steps else -1


def test_a_training_loop_killed_60_times_resumes_bit_identical(tmp_path):
    epochs = 300
    runs = Runs()
    finished = []
    try:
        assert runs.run([tmp_path / "straight", "--epochs", epochs, "--quiet"]) == 0
        rng = random.Random(1234)
        run = tmp_path / "killed-0"
        kills, progress, torn = 0, [], 0
        while kills < 60:
            status = runs.run([run, "--epochs", epochs, "--quiet"], kill_after=rng.uniform(0, 0.08))
            if os.WIFSIGNALED(status):
                assert os.WTERMSIG(status) == signal.SIGKILL
                kills += 1
                progress.append(committed(run))
                torn += any(p.name.startswith(".tmp") for p in run.glob("*"))
            else:
                # It finished before its kill came (a fast machine): keep it
                # for the comparison and go on killing a new run.
                assert status == 0, f"a resumed run failed: {status}"
                finished.append(run)
                run = tmp_path / f"killed-{len(finished)}"
        assert runs.run([run, "--epochs", epochs, "--quiet"]) == 0
        finished.append(run)
    finally:
        runs.close()
    # The kills landed all through training, and some in the middle of a save.
    assert len(set(progress)) >= 10, progress
    assert torn >= 1, "no kill landed inside a save"
    print(f"{kills} kills, committed steps seen {sorted(set(progress))}, {torn} inside a save")
    with ckpt.CheckpointManager(tmp_path / "straight") as a:
        expected = a.load(epochs - 1)
        for run in finished:
            with ckpt.CheckpointManager(run) as b:
                assert a.latest() == b.latest() == epochs - 1
                same(b.load(epochs - 1), expected)
                assert a.best() == b.best()
