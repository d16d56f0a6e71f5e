"""`CheckpointManager`: ckpt's crash-safe run store for a PyTorch training
loop. The run directory has the layout the `ckpt` command reads
(`ckpt ls runs/exp1`): a save is committed by replacing `manifest.json`
atomically, so a crash or a kill at any instant leaves the last committed
step loadable."""

import os
from types import SimpleNamespace

from ._ckpt import Manager as _Manager
from .tensors import from_raw, kind as _kind, to_raw


class Restored(dict):
    """A restored checkpoint: the dict that was saved, with `step` (the step
    it came from) and `fallback` (the newer steps that did not load, as
    `(step, why)` pairs; empty when the newest step loaded)."""

    def __init__(self, tree, step, fallback):
        super().__init__(tree)
        self.step = step
        self.fallback = fallback


class CheckpointManager:
    """A run directory (or `s3://bucket/prefix`) open for writing; one
    process at a time (a second raises LockedError).

        mgr = ckpt.CheckpointManager("runs/exp1", keep_last=3, keep_best=1,
                                     metric="val_loss", mode="min")
        state = mgr.restore_latest()            # None in a new run
        start = state["epoch"] + 1 if state is not None else 0
        for epoch in range(start, epochs):
            ...
            mgr.save(epoch, {"model": model.state_dict(),
                             "optimizer": opt.state_dict(), "epoch": epoch},
                     metrics={"val_loss": v})

    Retention: the newest `keep_last` steps are kept; with `keep_best=K`
    and `metric=NAME`, also the K best by that metric (`mode` "min" or
    "max"; `missing` says what a step without it is: "ignore", "keep" or
    "error"); with `keep_every=N`, every step that is a multiple of N
    (`keep_every_epochs=N`: the last step of every Nth epoch). The newest
    step is always kept.

    `format` is the checkpoint file's: "safetensors" (the default), "pth"
    (opens in `torch.load(weights_only=True)`) or "ckptz". `incremental`
    stores tensors by content in 4 MiB chunks, writing only what changed.
    `durable=False` skips the syncs (a power cut may then lose recent
    saves; a crash still cannot). `verify=False` skips the hash checks on
    load. `skip_if_busy=True` makes `save_async` skip a save while the
    previous one still runs, instead of waiting for it.
    """

    def __init__(
        self,
        dir,
        keep_last=3,
        keep_best=0,
        metric=None,
        mode="min",
        missing="ignore",
        keep_every=None,
        keep_every_epochs=None,
        format="safetensors",
        incremental=False,
        durable=True,
        verify=True,
        skip_if_busy=False,
        tensors=None,
    ):
        settings = SimpleNamespace(
            keep_last=keep_last,
            keep_best=keep_best,
            metric=metric,
            mode=mode,
            missing=missing,
            keep_every=keep_every,
            keep_every_epochs=keep_every_epochs,
            format=format,
            incremental=incremental,
            durable=durable,
            verify=verify,
            skip_if_busy=skip_if_busy,
        )
        self._kind = _kind(tensors)
        self._m = _Manager(os.fspath(dir), settings)

    def save(self, step, state, metrics=None, epoch=None):
        """Saves `state` (a dict of state dicts, numbers, ...: what
        `torch.save` takes for a checkpoint) as `step` and commits it, then applies
        retention. `metrics` (name -> number) are recorded for `best()`,
        retention and `ckpt ls`; `epoch` defaults to `state["epoch"]`. A
        background save still running finishes first. Returns a dict: step,
        bytes, written, deleted (steps retention removed), seconds."""
        return self._m.save(step, to_raw(_checked(state)), *_args(state, metrics, epoch))

    def save_async(self, step, state, metrics=None, epoch=None):
        """Copies the tensors of `state` once (into a buffer reused from
        save to save), returns, and commits in the background with the GIL
        released, so training goes on at once. One save runs at a time: a
        second call waits for the first (or, with `skip_if_busy`, skips and
        returns False). Its error is raised by the next `save`,
        `save_async`, `wait` or `close`. CPU tensors are copied once; a
        GPU tensor is first copied to the CPU, then into the buffer."""
        return self._m.save_async(step, to_raw(_checked(state)), *_args(state, metrics, epoch))

    def wait(self):
        """Waits for the background save; its report, or None."""
        return self._m.wait()

    def steps(self):
        """The committed steps, oldest first: dicts of step, epoch,
        metrics, time and bytes."""
        return self._m.steps()

    def latest(self):
        """The newest committed step's number, or None."""
        return self._m.latest()

    def best(self):
        """The best committed step's number by the keep-best metric, or
        None."""
        return self._m.best()

    def load(self, step):
        """The state saved as `step`, its content hash checked."""
        if step is None:
            raise ValueError(
                "no step to load: latest() and best() give None for a run with no committed "
                "step, and best() also without keep_best and a metric"
            )
        return from_raw(self._m.load(step), self._kind)

    def restore_latest(self):
        """The newest committed step that loads intact, as a `Restored`
        dict (`.step`, `.fallback`), or None for a run with no steps.
        Damaged newer steps are passed over and named in `.fallback`; when
        none loads, IntegrityError names every problem."""
        found = self._m.restore_latest()
        if found is None:
            return None
        step, tree, skipped = found
        return Restored(from_raw(tree, self._kind), step, skipped)

    def gc(self, dry_run=False):
        """Applies the retention rules now; the steps deleted (with
        `dry_run`, the steps that would be)."""
        return self._m.gc(dry_run)

    @property
    def dir(self):
        """The run's directory or URL."""
        return self._m.dir()

    @property
    def opened(self):
        """What opening the run removed (leftovers of interrupted saves)
        and why the manifest was rebuilt, if it was."""
        removed, rebuilt = self._m.opened()
        return {"removed": removed, "rebuilt": rebuilt}

    def close(self):
        """Finishes the background save and releases the run's lock."""
        self._m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _checked(state):
    if not isinstance(state, dict):
        raise TypeError(f"a checkpoint is a dict (of state dicts, numbers, ...), not {type(state).__name__}")
    return state


def _args(state, metrics, epoch):
    if epoch is None:
        found = state.get("epoch")
        epoch = found if isinstance(found, int) and not isinstance(found, bool) else 0
    metrics = [(str(k), float(v)) for k, v in (metrics or {}).items()]
    return metrics, epoch
