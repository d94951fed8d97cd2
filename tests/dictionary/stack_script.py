"""Trains a 2-layer stack on a tiny model; run under torchrun by test_stack_train.py.

usage: python stack_script.py OUT_DIR   (writes OUT_DIR/rank<R>.pt: every layer's state dict on that rank)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lmscope.dictionary.multi import train_stack
from lmscope.dictionary.train import RunConfig
from tiny_models import tiny_hooked_with_tokenizer

if __name__ == "__main__":
    torch.set_num_threads(1)
    model = tiny_hooked_with_tokenizer(300, n_layer=3)
    texts = [f"the cat number {i} sat on the mat and saw {i % 7} birds" for i in range(48)]
    run = train_stack(model, layers=[0, 2], d_sae=24, tokens=64 * 10, batch_size=64, buffer_tokens=200, texts=texts,
                      run=RunConfig(out_dir=sys.argv[1], checkpoint_every=5))
    states = {la: d.state_dict() for la, d in run.dictionaries.items()}
    torch.save(states, Path(sys.argv[1]) / f"rank{os.environ.get('RANK', '0')}.pt")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
