"""What the zoo card reports about a trained model: ordinal and greater-than accuracy on held-out prompts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def _last_logits(model: nn.Module, tokenizer: Any, prompts: Sequence[str], batch_size: int = 64) -> Tensor:
    """Next-token logits after each prompt (BOS prepended, right-padded batches)."""
    rows = [[tokenizer.bos_token_id, *tokenizer(p, add_special_tokens=False)["input_ids"]] for p in prompts]
    out = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            width = max(len(r) for r in chunk)
            ids = torch.full((len(chunk), width), tokenizer.bos_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, r in enumerate(chunk):
                ids[j, : len(r)], mask[j, : len(r)] = torch.tensor(r), 1
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            out.append(logits[torch.arange(len(chunk)), mask.sum(1) - 1])
    return torch.cat(out)


def single_token_id(tokenizer: Any, word: str) -> int:
    """The id of `" " + word`, which the corpus's tokenizer keeps as one token for every task item."""
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not a single token")
    return int(ids[0])


def ordinal_accuracy(model: nn.Module, tokenizer: Any, n_per_task: int = 40, seed: int = 1) -> dict[str, Any]:
    """Top-1 accuracy at continuing runs and completing successor templates, overall and per group.

    `accuracy` is top-1 over the whole vocabulary; `accuracy_within_task` is top-1 among the task's items
    (a run may also legitimately end, which only the first penalises).
    """
    from lmscope.data.synthetic import ALL_TASKS, successor_eval_prompts

    prompts = successor_eval_prompts(n_per_task, seed=seed)
    logits = _last_logits(model, tokenizer, [p.prompt for p in prompts])
    targets = torch.tensor([single_token_id(tokenizer, p.answer) for p in prompts])
    hits = (logits.argmax(-1) == targets).tolist()
    task_ids = {task: torch.tensor([single_token_id(tokenizer, w) for w in dict.fromkeys(items)])
                for task, items in ALL_TASKS.items()}
    in_task = [bool(task_ids[p.task][logits[i, task_ids[p.task]].argmax()] == targets[i])
               for i, p in enumerate(prompts)]
    groups: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for p, hit, hit_in_task in zip(prompts, hits, in_task, strict=True):
        ood = p.task == "roman_numerals"
        keys = ["ood_roman"] if ood else ["in_distribution", p.kind, f"{p.kind}:{p.task}"]
        if not ood and p.kind == "template":
            keys.append("template_heldout_items" if p.heldout_item else "template_seen_items")
        for key in keys:
            groups[key].append((hit, hit_in_task))
    return {k: {"accuracy": sum(h for h, _ in v) / len(v), "accuracy_within_task": sum(t for _, t in v) / len(v),
                "n": len(v)} for k, v in sorted(groups.items())}


def greater_than_accuracy(model: nn.Module, tokenizer: Any, n: int = 200, seed: int = 2) -> dict[str, float]:
    """Probability mass on later vs earlier two-digit years after "... to the year 17" (the paper's metric)."""
    from lmscope.data.synthetic import greater_than_prompts

    prompts = greater_than_prompts(n, seed=seed)
    probs = _last_logits(model, tokenizer, [p.prompt for p in prompts]).softmax(-1)
    yy_ids = torch.tensor([tokenizer(f"{yy:02d}", add_special_tokens=False)["input_ids"][0] for yy in range(100)])
    yy_probs = probs[:, yy_ids]
    diffs, top_ok = [], 0
    for row, p in zip(yy_probs, prompts, strict=True):
        diffs.append(float(row[p.start_yy + 1 :].sum() - row[: p.start_yy + 1].sum()))
        top_ok += int(row.argmax().item() > p.start_yy)
    return {"prob_diff": sum(diffs) / len(diffs), "top1_later": top_ok / len(prompts), "n": len(prompts)}


def evaluate_zoo_model(model: nn.Module, tokenizer: Any) -> dict[str, Any]:
    return {"ordinal": ordinal_accuracy(model, tokenizer), "greater_than": greater_than_accuracy(model, tokenizer)}
