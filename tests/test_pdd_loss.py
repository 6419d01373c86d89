"""PDD loss terms against hand computations in numpy (float64) on small tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adlab.models.pdd_loss import cos_term, diversity_loss, mse_sum, pdd_loss


def _np(ts):
    return [t.detach().double().numpy().reshape(t.shape[0], -1) for t in ts]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _maps(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4, 8, 8), (3, 8, 4, 4), (3, 16, 2, 2)]  # finest first, as the students return
    return [torch.randn(s, generator=g) for s in shapes]


def _correlated(base: list[torch.Tensor], noise: float, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [b + noise * torch.randn(b.shape, generator=g) for b in base]


def _hand_diversity(s1, s2, low=1, tau_low=0.75, tau_high=0.30) -> float:
    total = 0.0
    for i, (a, b) in enumerate(zip(_np(s1), _np(s2))):
        c = _cos(a, b)
        if i < low:
            total += np.mean([max(v - tau_low, 0.0) for v in c])
        else:
            total += -np.mean([min(v - tau_high, 0.0) for v in c])
    return total


def test_diversity_loss_matches_hand_computation():
    # s1 ~ s2 at every scale: the finest scale is above tau_low (penalised), coarser ones not.
    s1 = _maps(0)
    s2 = _correlated(s1, 0.5, 1)
    hand = _hand_diversity(s1, s2)
    assert hand > 0
    assert diversity_loss(s1, s2).item() == pytest.approx(hand, rel=1e-5)


def test_diversity_loss_penalises_dissimilar_coarse_scales():
    s1 = _maps(0)
    s2 = [-t for t in s1]  # cos = -1 everywhere: no low-scale penalty, 2 * (0.30 + 1) high
    assert diversity_loss(s1, s2).item() == pytest.approx(2 * 1.30, rel=1e-5)
    assert diversity_loss(s1, s2, low_layers=0, tau_high=0.5).item() == pytest.approx(
        3 * 1.5, rel=1e-5
    )
    # identical students: only the low scale is penalised, by 1 - tau_low
    assert diversity_loss(s1, s1).item() == pytest.approx(0.25, rel=1e-5)


def test_mse_and_cos_terms_match_hand_computation():
    a, b = _maps(2), _maps(3)
    mse = sum(np.mean((x - y) ** 2) for x, y in zip(_np(a), _np(b)))
    cos = [np.mean(_cos(x, y)) for x, y in zip(_np(a), _np(b))]
    assert mse_sum(a, b).item() == pytest.approx(mse, rel=1e-5)
    assert cos_term(a, b, "paper").item() == pytest.approx(sum(1 - c for c in cos), rel=1e-5)
    assert cos_term(a, b, "official").item() == pytest.approx(sum(cos), rel=1e-5)


@pytest.mark.parametrize("sign", ["paper", "official"])
def test_full_pdd_loss_matches_hand_computation(sign):
    fb = _maps(4)
    sp = _correlated(fb, 0.7, 5)
    sn = _correlated(sp, 0.4, 6)
    parts = pdd_loss(fb, sp, sn, cos_sign=sign)
    f, p, n = _np(fb), _np(sp), _np(sn)
    mse_p = sum(np.mean((x - y) ** 2) for x, y in zip(p, f))
    mse_n = sum(np.mean((x - y) ** 2) for x, y in zip(f, n))
    cos = sum(np.mean(_cos(x, y)) for x, y in zip(p, f))
    cos_t = 3 - cos if sign == "paper" else cos
    div = _hand_diversity(sp, sn)
    hand = 0.02 * mse_p + 0.05 * cos_t + 0.02 * mse_n + 0.5 * div
    assert parts["loss"].item() == pytest.approx(hand, rel=1e-5)
    assert parts["diversity"].item() == pytest.approx(div, rel=1e-5)
    assert parts["cos"].item() == pytest.approx(cos_t, rel=1e-5)


def test_custom_weights_and_taus_are_used():
    fb, sp = _maps(7), _maps(8)
    sn = _correlated(sp, 0.3, 9)
    parts = pdd_loss(
        fb, sp, sn, w_mse_prior=1.0, w_cos=0.0, w_mse_plain=0.0, w_div=2.0, tau_low=0.1
    )
    mse_p = sum(np.mean((x - y) ** 2) for x, y in zip(_np(sp), _np(fb)))
    div = _hand_diversity(sp, sn, tau_low=0.1)
    assert parts["loss"].item() == pytest.approx(mse_p + 2 * div, rel=1e-5)


def test_single_student_gets_the_prior_student_terms():
    fb, s = _maps(10), _maps(11)
    parts = pdd_loss(fb, None, s)
    mse = sum(np.mean((x - y) ** 2) for x, y in zip(_np(s), _np(fb)))
    cos = sum(np.mean(_cos(x, y)) for x, y in zip(_np(s), _np(fb)))
    assert parts["loss"].item() == pytest.approx(0.02 * mse + 0.05 * (3 - cos), rel=1e-5)
    assert "diversity" not in parts


def test_bad_inputs_raise():
    fb = _maps(0)
    with pytest.raises(ValueError, match="cos_sign"):
        pdd_loss(fb, fb, fb, cos_sign="minus")
    with pytest.raises(ValueError, match="at least one student"):
        pdd_loss(fb, None, None)
    with pytest.raises(ValueError, match="plain student shapes"):
        pdd_loss(fb, fb, [t[:, :2] for t in fb])
