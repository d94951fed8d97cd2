"""Reproducibility: seeds, resume after an interruption (in process and after kill -9), torchrun (gloo)."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

from lmscope.dictionary import latest_checkpoint
from lmscope.errors import InputError

SCRIPT = Path(__file__).with_name("train_script.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dict_train_script", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


S = _script()


class Killed(Exception):
    pass


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): CPU reductions depend on the thread count
    try:
        est = S.estimator().fit(S.data())
    finally:
        torch.set_num_threads(before)
    assert any(h["n_dead"] > 0 for h in est.history_)  # AuxK and resampling were exercised
    return est.dictionary_.state_dict()


def test_seed_reproducible_and_seed_matters(reference: dict[str, torch.Tensor]) -> None:
    again = S.estimator().fit(S.data()).dictionary_.state_dict()
    other = S.estimator(n_steps=20)
    other.seed = 6
    diff = other.fit(S.data()).dictionary_.state_dict()
    assert _equal(reference, again)
    assert not torch.equal(diff["W_dec"], reference["W_dec"])


def test_interrupted_then_resumed_equals_uninterrupted(reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    def die(step: int, total: int, rec: dict[str, float]) -> None:
        if step == 140:
            raise Killed

    with pytest.raises(Killed):
        S.estimator().fit(S.data(), run=S.run(str(tmp_path)), progress=die)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "step-00000125.pt"
    resumed = S.estimator().fit(S.data(), run=S.run(str(tmp_path), resume=True))
    assert _equal(reference, resumed.dictionary_.state_dict())
    assert len(resumed.history_) == 300 and [h["step"] for h in resumed.history_] == list(range(300))
    assert len(list((tmp_path / "checkpoints").glob("step-*.pt"))) == 2  # keep_checkpoints
    other = S.estimator().set_params(lr=1e-2)
    last = tmp_path / "checkpoints" / "step-00000300.pt"  # the resumed run checkpoints its last step
    with pytest.raises(InputError, match="^" + re.escape(f"{last}: a checkpoint of a different run (lr was 0.003, "
                                                         "now 0.01); use a new output directory or the same settings")):
        other.fit(S.data(), run=S.run(str(tmp_path), resume=True))


def test_kill_9_then_resume(reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    ck, out = tmp_path / "run", tmp_path / "w.pt"
    held = Path(str(out) + ".held")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out), str(ck)], env={**ENV, "HOLD_AT": "60"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not held.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None and held.exists(), "the run should be waiting at step 60 to be killed"
    assert latest_checkpoint(ck) is not None  # step 50's checkpoint, mid-run
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), str(ck), "resume"], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _equal(reference, torch.load(out, weights_only=True))


def test_torchrun_two_gloo_ranks_equal_one_process(reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    with socket.socket() as sock:  # a free port: a fixed one collides with concurrent runs
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(SCRIPT), str(out)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    for k, v in reference.items():
        assert torch.allclose(got[k], v, atol=1e-4, rtol=1e-4), (k, (got[k] - v).abs().max())
