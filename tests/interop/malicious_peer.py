"""Shows that Python WOULD have run each file of tests/fixtures/malicious/.

For every file in expected.json, in a fresh temporary directory as the
current directory and a fresh Python process, it opens the file the way
its `runs_in` says (`torch.load(path, weights_only=False)`, `pickle.load`,
`numpy.load(path, allow_pickle=True)`; "none" files are opened with
`torch.load(weights_only=False)` too) and looks for the marker file the
payload creates (a name starting with `ckpt_marker`). Every payload is
harmless: it only creates that file.

Prints one line per file; exits non-zero when a file expected to run did
not, or when a "none" file did.

    python tests/interop/malicious_peer.py [tests/fixtures/malicious]
"""

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent / "fixtures" / "malicious"

OPEN = {
    "torch.load": "import torch; torch.load(sys.argv[1], weights_only=False)",
    "none": "import torch; torch.load(sys.argv[1], weights_only=False)",
    "pickle.load": "import pickle; pickle.load(open(sys.argv[1], 'rb'))",
    "numpy.load": "import numpy; numpy.load(sys.argv[1], allow_pickle=True)",
}


def marker(cwd):
    return any(p.name.startswith("ckpt_marker") for p in Path(cwd).iterdir())


def attempt(path, runs_in):
    """(ran, how the loader ended) for one file."""
    code = "import sys\n" + OPEN[runs_in]
    with tempfile.TemporaryDirectory() as cwd:
        try:
            out = subprocess.run(
                [sys.executable, "-c", code, str(path)],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=120,
                stdin=subprocess.DEVNULL,
            )
            ended = "returned" if out.returncode == 0 else (out.stderr.strip().splitlines() or ["?"])[-1]
        except subprocess.TimeoutExpired:
            ended = "timed out"
        # Payloads that start a child process (Popen, asyncio) may finish
        # just after the loader returns.
        deadline = time.monotonic() + 3
        while not marker(cwd) and time.monotonic() < deadline:
            time.sleep(0.1)
        return marker(cwd), ended[:120]


def main():
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER
    expected = json.loads((folder / "expected.json").read_text())
    names = sorted(expected)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda n: attempt(folder / n, expected[n]["runs_in"]), names))
    failures = 0
    for name, (ran, ended) in zip(names, results):
        want = expected[name]["runs_in"] != "none"
        ok = ran == want
        failures += not ok
        verdict = "RAN" if ran else "did not run"
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {expected[name]['runs_in']} {verdict} "
              f"({expected[name]['global']}; loader {ended})")
    print(f"{len(names) - failures}/{len(names)} as expected")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
