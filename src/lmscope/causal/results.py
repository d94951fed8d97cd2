"""Result dataclasses of `lmscope.causal`: JSON-safe `to_dict()`, `save(dir)` and `load(dir)` through the
results layer (`lmscope.results`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from lmscope.errors import InputError
from lmscope.results import ResultMixin, numbers


@dataclass
class PatchingResult(ResultMixin):
    """Activation patching over components: `effects [n_pairs, n_components]` = patched - base metric.

    `recovered` is each component's mean effect over the mean source-base gap (1: the component alone
    moves the base run all the way to the source's metric).
    """

    kind: ClassVar[str] = "activation_patching"

    components: list[str]
    effects: Tensor
    y_base: Tensor
    y_source: Tensor
    metric: str = "metric"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_effect(self) -> Tensor:
        return self.effects.mean(0)

    @property
    def recovered(self) -> Tensor:
        gap = (self.y_source - self.y_base).mean()
        return self.mean_effect / gap if float(gap) != 0 else torch.full_like(self.mean_effect, float("nan"))

    def ranking(self, k: int | None = None) -> list[tuple[str, float]]:
        """Components by |mean effect|, largest first."""
        order = self.mean_effect.abs().argsort(descending=True).tolist()[:k]
        return [(self.components[i], float(self.mean_effect[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "components": self.components, "mean_effect": self.mean_effect.tolist(),
                "recovered": self.recovered.tolist(), "effects": self.effects.tolist(),
                "y_base": self.y_base.tolist(), "y_source": self.y_source.tolist(), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchingResult:
        """Rebuild from `to_dict()` (float64; `mean_effect` and `recovered` are recomputed from `effects`)."""
        effects = torch.tensor(numbers(d["effects"]), dtype=torch.float64).reshape(-1, len(d["components"]))
        return cls([str(c) for c in d["components"]], effects, torch.tensor(numbers(d["y_base"]), dtype=torch.float64),
                   torch.tensor(numbers(d["y_source"]), dtype=torch.float64), str(d["metric"]), dict(d["meta"]))


@dataclass
class MediationResult(ResultMixin):
    """Per-component effects for each scheme (`unadjusted`, `stratified`, `entropy_balancing`).

    `effects[scheme][effect]` with effect in te/nde/nie holds `estimate`, `ci_low`, `ci_high`, `se`
    (lists over components; TE does not depend on the component and is one value);
    `localization[scheme]` scores how concentrated |NIE| is; `by_stratum[label]` the point NIE within a stratum.
    """

    kind: ClassVar[str] = "mediation"

    components: list[str]
    outcome: str
    n_treated: int
    n_control: int
    strata: dict[str, dict[str, Any]]
    effects: dict[str, dict[str, Any]]
    localization: dict[str, dict[str, float]]
    by_stratum: dict[str, list[float]]
    meta: dict[str, Any] = field(default_factory=dict)

    def _get(self, effect: str, scheme: str, key: str = "estimate") -> Tensor:
        if scheme not in self.effects:
            raise InputError(f"scheme {scheme!r}: expected one of {', '.join(self.effects)}")
        return torch.tensor(self.effects[scheme][effect][key], dtype=torch.float64)

    def nie(self, scheme: str = "stratified") -> Tensor:
        return self._get("nie", scheme)

    def nde(self, scheme: str = "stratified") -> Tensor:
        return self._get("nde", scheme)

    def te(self, scheme: str = "stratified") -> float:
        return float(self._get("te", scheme)[0])

    def ci(self, effect: str, scheme: str = "stratified") -> tuple[Tensor, Tensor]:
        """`(low, high)` of the bootstrap interval of an effect (te, nde, nie)."""
        return self._get(effect, scheme, "ci_low"), self._get(effect, scheme, "ci_high")

    def ranking(self, scheme: str = "stratified", k: int | None = None) -> list[tuple[str, float]]:
        """Components by |NIE| under `scheme`, largest first."""
        nie = self.nie(scheme)
        return [(self.components[i], float(nie[i])) for i in nie.abs().argsort(descending=True).tolist()[:k]]

    def table(self, scheme: str) -> list[dict[str, Any]]:
        """One row per component: TE, NDE, NIE with their intervals under `scheme`."""
        e = self.effects[scheme]
        rows = []
        for k, label in enumerate(self.components):
            row: dict[str, Any] = {"component": label}
            for name in ("te", "nde", "nie"):
                kk = 0 if name == "te" else k
                row[name] = e[name]["estimate"][kk]
                row[f"{name}_ci"] = [e[name]["ci_low"][kk], e[name]["ci_high"][kk]]
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_component"] = {s: self.table(s) for s in self.effects}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MediationResult:
        """Rebuild a result from `to_dict()` (e.g. a saved result.json)."""
        return cls(**{k: v for k, v in d.items() if k not in ("per_component", "kind", "version")})
