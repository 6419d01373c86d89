"""PDD's loss: distil both students to the fused targets and keep them diverse but consistent.

    L = w_mse_prior * MSE(S_p, f_b) + w_cos * Cos(S_p, f_b) + w_mse_plain * MSE(f_b, S_n)
        + w_div * Div(S_p, S_n)

All terms work on each sample's flattened feature map and are summed over scales. The official
code's Cos term is +cos (it pushes S_p away from f_b); the paper writes beta * (1 - cos):
cos_sign="paper" (default) uses 1 - cos, cos_sign="official" reproduces the code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

COS_SIGNS = ("paper", "official")


def flat_cos(a: Tensor, b: Tensor) -> Tensor:
    """(B,) cosine similarity of each sample's whole feature map."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def mse_sum(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Sum over scales of the mean squared error (torch's MSELoss on flattened maps)."""
    return torch.stack([F.mse_loss(x, y) for x, y in zip(a, b)]).sum()


def cos_term(a: Sequence[Tensor], b: Sequence[Tensor], sign: str = "paper") -> Tensor:
    """Sum over scales of mean_b(1 - cos) ("paper") or mean_b(cos) ("official")."""
    if sign not in COS_SIGNS:
        raise ValueError(f"method.loss.cos_sign must be one of {COS_SIGNS}, got {sign!r}")
    terms = [flat_cos(x, y).mean() for x, y in zip(a, b)]
    total = torch.stack(terms).sum()
    return len(terms) - total if sign == "paper" else total


def diversity_loss(
    s1: Sequence[Tensor],
    s2: Sequence[Tensor],
    low_layers: int = 1,
    tau_low: float = 0.75,
    tau_high: float = 0.30,
) -> Tensor:
    """Students differ on the finest `low_layers` scales and agree on the others.

    Per sample cos of the flattened maps; low scales add mean(relu(cos - tau_low)) (penalise
    similarity above tau_low), the rest add -mean(min(cos - tau_high, 0)) (penalise similarity
    below tau_high). Lists are finest first, as the official call (low_dim_layers=1).
    """
    if len(s1) != len(s2):
        raise ValueError(f"diversity loss needs equal scale counts, got {len(s1)} and {len(s2)}")
    terms = []
    for i, (x, y) in enumerate(zip(s1, s2)):
        cos = flat_cos(x, y)
        if i < low_layers:
            terms.append(torch.relu(cos - tau_low).mean())
        else:
            terms.append(-torch.clamp(cos - tau_high, max=0).mean())
    return torch.stack(terms).sum()


def pdd_loss(
    targets: Sequence[Tensor],
    prior: Sequence[Tensor] | None,
    plain: Sequence[Tensor] | None,
    *,
    w_mse_prior: float = 0.02,
    w_cos: float = 0.05,
    w_mse_plain: float = 0.02,
    w_div: float = 0.5,
    cos_sign: str = "paper",
    low_layers: int = 1,
    tau_low: float = 0.75,
    tau_high: float = 0.30,
) -> dict[str, Tensor]:
    """The PDD loss and its parts ("loss", "mse_prior", "cos", "mse_plain", "diversity").

    With one student (ablation rows), that student gets the prior-student terms
    (w_mse_prior * MSE + w_cos * Cos) and there is no diversity term.
    """
    if prior is None and plain is None:
        raise ValueError("pdd_loss needs at least one student's outputs")
    for name, preds in (("prior", prior), ("plain", plain)):
        if preds is not None and [p.shape for p in preds] != [t.shape for t in targets]:
            raise ValueError(
                f"{name} student shapes {[tuple(p.shape) for p in preds]} != target shapes "
                f"{[tuple(t.shape) for t in targets]}"
            )
    parts: dict[str, Tensor] = {}
    if prior is not None and plain is not None:
        parts["mse_prior"] = mse_sum(prior, targets)
        parts["cos"] = cos_term(prior, targets, cos_sign)
        parts["mse_plain"] = mse_sum(targets, plain)
        parts["diversity"] = diversity_loss(prior, plain, low_layers, tau_low, tau_high)
        loss = (
            w_mse_prior * parts["mse_prior"]
            + w_cos * parts["cos"]
            + w_mse_plain * parts["mse_plain"]
            + w_div * parts["diversity"]
        )
    else:
        only = prior if prior is not None else plain
        parts["mse_prior"] = mse_sum(only, targets)
        parts["cos"] = cos_term(only, targets, cos_sign)
        loss = w_mse_prior * parts["mse_prior"] + w_cos * parts["cos"]
    return {"loss": loss, **parts}
