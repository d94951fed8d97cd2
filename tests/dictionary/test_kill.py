"""`lmscope dict train` killed with SIGKILL at seeded-random steps, rerun each time with the same command, ends
with the bytes of an uninterrupted run (cfg.json and sae_weights.safetensors; dict train writes no timestamps).

The runs go through tests/hold_cli.py, which holds the CLI still before a chosen optimisation step and says so in
a marker file, so the kill lands exactly there however fast or loaded the machine is.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HOLD = Path(__file__).parents[1] / "hold_cli.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # CPU float reductions depend on the thread count
ARGS = ["dict", "train", "zoo:gpt2-tiny", "--layer", "1", "--d-sae", "64", "--tokens", "2560", "--batch-size", "256",
        "--activation", "topk", "--k", "8", "--json"]  # 10 steps, a checkpoint after each (the default: ~10 a run)
STEPS = 10
FILES = ("cfg.json", "sae_weights.safetensors")


def _train(out: Path, hold: int | None = None, marker: Path | None = None) -> subprocess.Popen[bytes]:
    """The command in a subprocess, its stderr in OUT.err (a file: a full pipe could stall it before the hold)."""
    env = dict(ENV)
    if hold is not None:
        env |= {"LMSCOPE_TEST_HOLD": f"train:{hold}", "LMSCOPE_TEST_HOLD_MARKER": str(marker)}
    with open(f"{out}.err", "ab") as err:
        return subprocess.Popen([sys.executable, str(HOLD), *ARGS, "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)


def _finish(proc: subprocess.Popen[bytes], out: Path) -> None:
    proc.wait(timeout=300)
    assert proc.returncode == 0, Path(f"{out}.err").read_text()[-2000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("kill") / "whole"
    _finish(_train(out), out)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # the default checkpoints are gone at the end
    return {name: (out / name).read_bytes() for name in FILES}


def test_kill_9_at_random_steps_then_rerun_gives_the_uninterrupted_bytes(reference: dict[str, bytes],
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "cut"
    holds = sorted(random.Random(15).sample(range(1, STEPS), 2))  # two distinct steps, the second in the rerun
    for n, hold in enumerate(holds):
        marker = tmp_path / f"held-{n}"
        proc = _train(out, hold, marker)
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert marker.exists() and proc.poll() is None, f"the run should be held before step {hold}: " + (
            Path(f"{out}.err").read_text()[-2000:])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not any((out / name).exists() for name in FILES)  # nothing final is written before the end
        steps = sorted(int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("step-*.pt"))
        assert steps and steps[-1] <= hold, steps  # the newest checkpoint is from before the kill
        assert not list((out / "checkpoints").glob("*.tmp*"))  # checkpoints are written atomically
    _finish(_train(out), out)  # the same command, once more: resumes from the newest checkpoint and finishes
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert {name: (out / name).read_bytes() for name in FILES} == reference
