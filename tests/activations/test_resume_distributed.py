"""A run killed with SIGKILL resumes to the same bytes; two torchrun (gloo) ranks equal one process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmscope.data.synthetic import generate_corpus
from lmscope.data.tokenizer import save_tokenizer
from tiny_models import tiny_hooked_with_tokenizer

POINTS = "blocks.0.mlp.hook_post,blocks.1.hook_resid_post"


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # CPU float reductions depend on the thread count (torchrun uses 1)


def _cmd(root: Path, corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lmscope", "extract", str(root / "model"), "--corpus", str(corpus), "--points",
            POINTS, "--out", str(out), "--shard-sentences", "4", "--json"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A saved tiny model, a corpus file, and the store of an uninterrupted run."""
    root = tmp_path_factory.mktemp("resume")
    model = tiny_hooked_with_tokenizer()
    model.hf.save_pretrained(root / "model")
    save_tokenizer(model.tokenizer, root / "model")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(s.text + "\n" for s in generate_corpus(240, seed=7)))
    result = subprocess.run(_cmd(root, corpus, root / "reference"), env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return root, corpus, root / "reference"


def _contents(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.iterdir())}


def test_kill_9_then_resume_gives_identical_store(setup: tuple[Path, Path, Path]) -> None:
    root, corpus, reference = setup
    out = root / "killed"
    proc = subprocess.Popen(_cmd(root, corpus, out), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shard-*.safetensors"))) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("shard-*.safetensors")))
    assert 5 <= done < 60, "the run should have been killed part-way"
    assert all(p.name.startswith(("shard-", "manifest", ".shard-", ".lmscope-write.lock")) for p in out.iterdir())
    assert (out / ".lmscope-write.lock").exists()  # the dead writer's lock, taken over by the rerun below
    result = subprocess.run(_cmd(root, corpus, out), env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _contents(out) == _contents(reference)


def test_torchrun_two_gloo_ranks_equal_one_process(setup: tuple[Path, Path, Path]) -> None:
    root, corpus, reference = setup
    out = root / "ddp"
    with socket.socket() as sock:  # a free port: a fixed one collides with other runs on the machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           *_cmd(root, corpus, out)[1:]]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _contents(out) == _contents(reference)
