"""Mod-10 features (Gould et al. 2023, section 4): SAE features of effective embeddings that carry "the
value mod 10", found by what they do to a successor head, and cross-checked with a linear probe.

Recipe, stated once:
- Data: the effective embeddings (`effective_embeddings`, default "mlp0") of every single-token item of
  every in-distribution succession task, both variants. An SAE (lmscope's `SAE`, ReLU + L1) is fitted on
  them for each of several seeds.
- For residue r, the class is the number tokens whose value is r mod 10 and that have a successor. Feature
  f's effect on the class is the mean drop of the successor's margin (its logit minus the mean logit over
  the variant's number tokens, through the head's OV circuit) when f's part `a_f * W_dec[f]` is removed
  from each embedding. The chosen feature is the one with the largest drop.
- Coverage of the class: the share of class tokens on which the chosen feature is active.
- Seeds: per residue, the chosen decoder directions of all seeds are compared; the modal choice is the one
  with the most seeds agreeing with it (cosine >= `agree_cosine`), and `agreement` is that share.
- Probe: an L2 multinomial probe from effective embeddings of numbers to the residue, fitted on three
  quarters of each residue's numbers (at least one, leaving at least one out) and scored on the rest;
  `cosines[r]` is the cosine of the probe's row r with the modal feature of residue r (after both are
  centred over residues).
- Support: every residue 0-9 needs at least `MIN_PER_RESIDUE` (2) single-token numbers whose successor is
  one token too (in the same variant), or there is nothing to choose a feature by and nothing to hold out
  for the probe. A digit-split tokenizer (SmolLM2, Llama 3...: only 0-9 are one token) has one number per
  residue and none for 9 (10 is two tokens); `check_residues` refuses such a model in one line before any
  work. Reading two-digit numbers through their last token in context is no fix: that token *is* the last
  digit, so "the value mod 10" would be the token's identity, not a feature shared by different tokens,
  which is the paper's finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from lmscope.errors import InputError
from lmscope.heads.succession import (
    _need_tokenizer,
    _select_tasks,
    effective_embeddings,
    head_logits,
    input_mode,
    task_tokens,
)
from lmscope.model.hooked import HookedModel
from lmscope.results import ResultMixin

N_RESIDUES = 10
MIN_PER_RESIDUE = 2
"""Single-token numbers with a single-token successor that each residue needs (see the module docstring)."""


@dataclass(frozen=True)
class NumberTokens:
    """Number tokens of one variant, `ids [n]` with their values `values [n]` (ascending)."""

    variant: str
    ids: Tensor
    values: Tensor


def number_tokens(model: HookedModel) -> list[NumberTokens]:
    """The single-token numbers of each variant, ascending by value."""
    groups, _ = task_tokens(_need_tokenizer(model), _select_tasks(["numbers"]))
    return [NumberTokens(g.variant, g.ids, g.items) for g in groups]


def all_task_token_ids(model: HookedModel) -> Tensor:
    """Every single-token item of every in-distribution task, both variants, without repeats `[n]`."""
    groups, _ = task_tokens(_need_tokenizer(model), _select_tasks(None))
    return torch.unique(torch.cat([g.ids for g in groups]))


def residue_support(model: HookedModel) -> Tensor:
    """`[10]`: per residue, the single-token numbers (both variants) whose successor is one token too."""
    support = torch.zeros(N_RESIDUES, dtype=torch.long)
    for g in number_tokens(model):
        values = set(g.values.tolist())
        with_succ = torch.tensor([v for v in values if v + 1 in values], dtype=torch.long)
        support += torch.bincount(with_succ % N_RESIDUES, minlength=N_RESIDUES)
    return support


def check_residues(model: HookedModel, min_per_residue: int = MIN_PER_RESIDUE) -> None:
    """Refuse, in one line, a model whose tokenizer leaves a residue with too few single-token numbers."""
    support = residue_support(model)
    short = [r for r in range(N_RESIDUES) if int(support[r]) < min_per_residue]
    if not short:
        return
    values = sorted({int(v) for g in number_tokens(model) for v in g.values.tolist()})
    have = "no single-token numbers" if not values else (
        f"{len(values)} single-token numbers ({values[0]}-{values[-1]}"
        + (": it splits longer numbers into digits)" if values[-1] < 10 else ")"))
    which = "every residue" if len(short) == N_RESIDUES else \
        f"residue{'s' if len(short) > 1 else ''} {', '.join(map(str, short))}"
    raise InputError(f"model: mod-10 features need every residue 0-9 on at least {min_per_residue} single-token "
                     f"numbers whose successor is one token too; this tokenizer has {have}, which leaves {which} "
                     f"short (per residue: {', '.join(str(int(c)) for c in support)})")


def check_head(model: HookedModel, layer: int, head: int) -> None:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise InputError(f"head: got {layer}.{head}; the model has {n_layers} layers of {n_heads} heads")


def fit_embedding_sae(x: Tensor, *, d_sae: int, l1_coefficient: float, n_steps: int, seed: int,
                      lr: float = 1e-2) -> Any:
    """An SAE fitted on effective embeddings `x [n, d_model]` (n is a few hundred: small batches, high lr)."""
    from lmscope.dictionary import SAE

    return SAE(d_sae, activation="relu", l1_coefficient=l1_coefficient, n_steps=n_steps,
               batch_size=min(256, len(x)), lr=lr, seed=seed, warmup_steps=50).fit(x)


def removal_effects(model: HookedModel, layer: int, head: int, sae: Any, numbers: NumberTokens,
                    mode: str, *, fold_ln: bool = True) -> tuple[Tensor, Tensor]:
    """For each residue and feature, the mean drop of the successor margin when the feature is removed.

    Returns `effects [10, d_sae]` and the codes `codes [n, d_sae]` of the variant's number tokens.
    """
    x = effective_embeddings(model, numbers.ids, mode=mode)  # [n, d]
    codes = sae.transform(x).float()  # [n, F]
    W_dec = sae.dictionary_.W_dec.detach().float()  # [F, d]
    pos = {int(v): i for i, v in enumerate(numbers.values.tolist())}
    src = [i for i, v in enumerate(numbers.values.tolist()) if int(v) + 1 in pos]
    dst = torch.tensor([pos[int(numbers.values[i]) + 1] for i in src])
    src_t = torch.tensor(src)

    def margin(logits: Tensor) -> Tensor:  # [..., p, n] -> [..., p]
        target = logits.gather(-1, dst.expand(*logits.shape[:-1])[..., None]).squeeze(-1)
        return target - logits.mean(-1)

    base = margin(head_logits(model, layer, head, x[src_t], numbers.ids, fold_ln=fold_ln))  # [p]
    removed = x[src_t][None] - codes[src_t].T[:, :, None] * W_dec[:, None, :]  # [F, p, d]
    drop = base[None] - margin(head_logits(model, layer, head, removed, numbers.ids, fold_ln=fold_ln))  # [F, p]
    residues = numbers.values[src_t] % N_RESIDUES
    effects = torch.stack([drop[:, residues == r].mean(-1) if bool((residues == r).any())
                           else torch.zeros(drop.shape[0]) for r in range(N_RESIDUES)])
    return effects, codes


@dataclass
class Mod10Result(ResultMixin):
    """Per residue class mod 10, the SAE feature that carries it (see the module docstring).

    `features[r]`: `{"residue", "seed", "feature", "effect", "coverage", "agreement"}`; `choices[s][r]` the
    feature chosen with seed s; `directions [10, d_model]` the modal features' unit decoder directions and
    `scales [10]` their typical size in the class (mean activation times decoder-row norm). result.json holds
    everything but `directions` (`[10, d_model]`), so it is read back with `read_result`, not rebuilt.
    """

    kind: ClassVar[str] = "mod10_features"

    layer: int
    head: int
    features: list[dict[str, Any]]
    choices: list[list[int]]
    seeds: list[int]
    probe: dict[str, Any]
    directions: Tensor
    scales: Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_coverage(self) -> float:
        return sum(f["coverage"] for f in self.features) / len(self.features)

    def to_dict(self) -> dict[str, Any]:
        return {"head": {"layer": self.layer, "head": self.head}, "features": self.features,
                "choices": self.choices, "seeds": self.seeds, "probe": self.probe,
                "mean_coverage": self.mean_coverage, "scales": self.scales.tolist(), "settings": self.settings}


def _modal(dirs: Tensor, agree_cosine: float) -> tuple[int, float]:
    """Index of the direction most others agree with, and the share agreeing (itself included)."""
    unit = torch.nn.functional.normalize(dirs, dim=-1)
    agree = (unit @ unit.T >= agree_cosine).float().sum(-1)
    best = int(agree.argmax())
    return best, float(agree[best]) / len(dirs)


def residue_probe(model: HookedModel, numbers: list[NumberTokens], directions: Tensor, *, mode: str,
                  seed: int = 0) -> dict[str, Any]:
    """Linear probe value mod 10 from effective embeddings; held-out accuracy and cosines with `directions`."""
    from lmscope.neurons.probe import LinearProbe

    x = torch.cat([effective_embeddings(model, g.ids, mode=mode) for g in numbers])
    y = torch.cat([g.values % N_RESIDUES for g in numbers])
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for r in range(N_RESIDUES):  # stratified: every residue on both sides (callers ensure >= 2 per residue)
        members = (y == r).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_train = min(len(members) - 1, max(1, (3 * len(members)) // 4))
        train.append(members[:n_train])
        test.append(members[n_train:])
    tr, te = torch.cat(train), torch.cat(test)
    n_train = len(tr)
    probe = LinearProbe(l1=0.0, l2=1e-3).fit(x[tr].numpy(), y[tr].numpy())
    rows = torch.from_numpy(probe.coef_).float()  # [10, d]
    rows = rows - rows.mean(0)
    dirs = directions - directions.mean(0)
    cos = torch.nn.functional.cosine_similarity(rows, dirs, dim=-1)
    return {"accuracy": float(probe.score(x[te].numpy(), y[te].numpy())), "n_train": int(n_train),
            "n_test": len(te), "cosines": cos.tolist(), "mean_cosine": float(cos.mean())}


def mod10_features(model: HookedModel, layer: int, head: int, *, seeds: Sequence[int] = (0, 1, 2),
                   d_sae: int = 256, l1_coefficient: float = 3e-3, n_steps: int = 1000, lr: float = 1e-2,
                   mode: str = "auto", agree_cosine: float = 0.8, fold_ln: bool = True) -> Mod10Result:
    """Find the mod-10 features of `model` through its successor head `layer.head` (module docstring).

    `fold_ln`: read the head's output through the final norm (`lmscope.heads.ov`)."""
    check_head(model, layer, head)
    mode = input_mode(mode, layer)  # the embedding this head reads
    if not seeds:
        raise InputError("seeds: expected at least one SAE seed")
    check_residues(model)
    numbers = number_tokens(model)
    data = effective_embeddings(model, all_task_token_ids(model), mode=mode)
    per_seed: list[dict[str, Tensor]] = []  # per seed: choice, effect, coverage, direction, scale per residue
    for seed in seeds:
        sae = fit_embedding_sae(data, d_sae=d_sae, l1_coefficient=l1_coefficient, n_steps=n_steps, seed=seed,
                                lr=lr)
        effects, covers, acts = torch.zeros(N_RESIDUES, d_sae), torch.zeros(N_RESIDUES, d_sae), []
        counts = torch.zeros(N_RESIDUES)
        for g in numbers:
            eff, codes = removal_effects(model, layer, head, sae, g, mode, fold_ln=fold_ln)
            residues = g.values % N_RESIDUES
            n_r = torch.bincount(residues, minlength=N_RESIDUES).float()
            effects += eff * n_r[:, None]
            covers += torch.stack([(codes[residues == r] > 0).float().sum(0) for r in range(N_RESIDUES)])
            acts.append((codes, residues))
            counts += n_r
        effects /= counts[:, None].clamp(min=1)
        choice = effects.argmax(-1)  # [10]
        rows = sae.dictionary_.W_dec.detach().float()[choice]  # [10, d]
        mean_act = torch.stack([torch.cat([c[res == r, choice[r]] for c, res in acts]).mean()
                                for r in range(N_RESIDUES)])
        per_seed.append({"choice": choice, "effect": effects.gather(1, choice[:, None]).squeeze(1),
                         "coverage": covers.gather(1, choice[:, None]).squeeze(1) / counts.clamp(min=1),
                         "direction": torch.nn.functional.normalize(rows, dim=-1),
                         "scale": mean_act * rows.norm(dim=-1)})
    features, directions, scales = [], [], []
    for r in range(N_RESIDUES):
        best, agreement = _modal(torch.stack([p["direction"][r] for p in per_seed]), agree_cosine)
        chosen = per_seed[best]
        features.append({"residue": r, "seed": int(seeds[best]), "feature": int(chosen["choice"][r]),
                         "effect": float(chosen["effect"][r]), "coverage": float(chosen["coverage"][r]),
                         "agreement": agreement})
        directions.append(chosen["direction"][r])
        scales.append(chosen["scale"][r])
    dirs_t = torch.stack(directions)
    probe = residue_probe(model, numbers, dirs_t, mode=mode)
    settings = {"mode": mode, "d_sae": d_sae, "l1_coefficient": l1_coefficient, "n_steps": n_steps, "lr": lr,
                "agree_cosine": agree_cosine, "n_embeddings": len(data), "fold_ln": fold_ln}
    return Mod10Result(layer, head, features, [p["choice"].tolist() for p in per_seed], list(seeds), probe, dirs_t,
                       torch.stack(scales), settings)
