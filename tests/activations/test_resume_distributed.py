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


HOLD = Path(__file__).parents[1] / "hold_cli.py"


@pytest.mark.parametrize(("point", "complete"), [("shard:4", 5), ("shard-tmp:11", 11)])
def test_kill_9_then_resume_gives_identical_store(setup: tuple[Path, Path, Path], point: str, complete: int) -> None:
    """Killed while held at a known point (tests/hold_cli.py: after shard 4 is renamed, or with shard 11 written
    to its temporary name), the store has exactly the shards finished by then, the dead writer's lock and at most
    one temporary file; the same command then finishes it to the bytes of an uninterrupted run."""
    root, corpus, reference = setup
    out, marker = root / f"killed-{complete}", root / f"held-{complete}"
    proc = subprocess.Popen([sys.executable, str(HOLD), *_cmd(root, corpus, out)[3:]],
                            env={**ENV, "LMSCOPE_TEST_HOLD": point, "LMSCOPE_TEST_HOLD_MARKER": str(marker)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists() and proc.poll() is None, f"the run should be held at {point}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read().decode()
    assert sorted(p.name for p in out.glob("shard-*.safetensors")) == [f"shard-{i:05d}.safetensors"
                                                                        for i in range(complete)]
    temporary = sorted(p.name for p in out.glob(".shard-*"))
    if point.startswith("shard-tmp"):  # shard 11 written in full to its temporary name only
        assert len(temporary) == 1 and temporary[0].startswith(f".shard-{complete:05d}.")
    else:
        assert temporary == []
    finished = {f"shard-{i:05d}.safetensors" for i in range(complete)}
    assert {p.name for p in out.iterdir()} - finished - set(temporary) == {"manifest.json", ".lmscope-write.lock"}
    result = subprocess.run(_cmd(root, corpus, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _contents(out) == _contents(reference)  # the temporary file and the lock are gone too


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
