"""A linear structural causal model as a tiny torch module whose mediator is a hook point: a worked
example of `HookedModule`, the ground truth of lmscope's mediation tests, and the benchmark against DoWhy.

C in {0, 1, 2} -> T (P(T=1 | C) rises with C); M = a T + c_m C + e_m; Y = b M + d T + c_y C + e_y.
Closed forms: NIE = a b, NDE = d, TE = d + a b. Comparing groups ignores that treated units have larger
C, which biases NIE by b c_m dC and NDE by c_y dC, where dC = E[C | T=1] - E[C | T=0] > 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmscope.model.toy import HookedModule

A, B, D, C_M, C_Y = 1.0, 2.0, 0.5, 1.5, 1.0
P_TREAT = (0.2, 0.5, 0.8)


class LinearSCM(nn.Module):
    """Input rows `[t, c, e_m, e_y]`; the mediator is the output of `self.m` (named hook point `m`)."""

    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        t, c, e_m, e_y = x.unbind(-1)
        m = self.m((A * t + C_M * c + e_m)[:, None])[:, 0]
        return B * m + D * t + C_Y * c + e_y


def scm_data(n: int, seed: int = 0) -> tuple[Tensor, list[int], list[int]]:
    """`n` units: input rows `[t, c, e_m, e_y]` (observed treatment, confounder, noise), T and C as lists."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, 3, (n,), generator=g)
    t = (torch.rand(n, generator=g) < torch.tensor(P_TREAT)[c]).float()
    noise = torch.randn(n, 2, generator=g) * 0.5
    x = torch.cat([t[:, None], c[:, None].float(), noise], dim=1)
    return x, t.long().tolist(), c.tolist()


def scm_model() -> HookedModule:
    """The SCM wrapped so that `mediate` can read and set its mediator (hook point `m`)."""
    scm = LinearSCM()
    return HookedModule(scm, {"m": scm.m})


def delta_c(t: list[int], c: list[int]) -> float:
    """E[C | T=1] - E[C | T=0]: the confounder gap that biases unadjusted estimates."""
    tt, cc = torch.tensor(t, dtype=torch.bool), torch.tensor(c, dtype=torch.float64)
    return float(cc[tt].mean() - cc[~tt].mean())
