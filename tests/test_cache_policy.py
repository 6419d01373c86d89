"""method.teacher_cache_gib=auto: bit-identical training with the cache it makes, and a refusal
with its reason wherever caching would not be exact or would not fit."""

from __future__ import annotations

import copy
import functools
import logging
import math
from pathlib import Path

import pytest
import torch
from test_pdd_method import _pdd  # the tiny PDD (ResNet18 + width-8 VMamba) of its tests

from adlab.data import AnomalyDataModule
from adlab.data.lodo import LodoDataModule
from adlab.data.transforms import Transform
from adlab.methods import cache_policy
from adlab.methods.cache_policy import caches_for, data_refusal, plan, planned_epochs
from adlab.methods.rd4ad import RD4AD
from adlab.methods.urd import URD
from adlab.models.fusion.ocbe import OCBE
from adlab.models.students.rd_decoder import ReverseDecoder
from adlab.models.students.skip_decoder import SkipDecoder
from adlab.models.teachers.timm_encoder import TimmEncoder
from adlab.paths import CONF_DIR


def _rd4ad(**kw) -> RD4AD:
    return RD4AD(
        teacher=TimmEncoder("resnet18"),
        fusion=functools.partial(OCBE),
        student=functools.partial(ReverseDecoder),
        optimizer={"lr": 0.005, "betas": (0.5, 0.999)},
        channels_last=True,
        **kw,
    )


def _train(method, images: torch.Tensor, orders: list[list[int]]) -> list[torch.Tensor]:
    """Plain optimisation steps over the given batches, the way Lightning runs them."""
    method.setup("fit")
    method.train()
    opt = method.configure_optimizers()
    losses = []
    for order in orders:
        batch = {"image": images[order], "path": [f"img{i}.png" for i in order]}
        batch = method.on_after_batch_transfer(batch, 0)
        loss = method.training_loss(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


@pytest.mark.parametrize("build", [_rd4ad, _pdd], ids=["rd4ad", "pdd"])
def test_auto_cache_trains_bit_identically_over_two_epochs(build):
    torch.manual_seed(0)
    plain = build()
    cached = copy.deepcopy(plain)
    cached.auto_cache, _ = caches_for("auto")
    cached.auto_cache.plan(None, 8)
    calls = []
    cached.model.teacher.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    images = torch.rand(8, 3, 64, 64)
    orders = [[3, 0, 6, 1], [7, 2, 5, 4], [1, 5, 0, 7], [4, 6, 2, 3]]  # 2 epochs, reshuffled
    want, got = _train(plain, images, orders), _train(cached, images, orders)
    assert [w.item() for w in want] == [g.item() for g in got]  # bit for bit, every step
    for (name, p), q in zip(plain.state_dict().items(), cached.state_dict().values()):
        assert torch.equal(p, q), name
    assert calls == [4, 4]  # the teacher ran in the first epoch only
    assert len(cached.teacher_cache) == 8 and cached.teacher_cache.take_hit_rate() == 0.5  # 8 of 16


def test_cached_features_keep_the_teachers_memory_layout():
    method = _rd4ad(teacher_cache_gib=1.0)
    method.setup("fit")
    images = torch.rand(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    keys = ["a", "b", "c", "d"]
    first = method.teacher_features(images, keys)
    again = method.teacher_features(images[[2, 0]], ["c", "a"])
    for f, a in zip(first, again):
        assert f.is_contiguous(memory_format=torch.channels_last)
        assert a.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, f[[2, 0]])


def test_auto_decides_on_the_first_batch_and_logs_why(caplog):
    method = _rd4ad(teacher_cache_gib="auto")
    images = torch.rand(2, 3, 64, 64)
    with caplog.at_level(logging.INFO, logger="adlab"):
        method.teacher_features(images, ["a", "b"])  # not planned: direct use stays uncached
    assert method.teacher_cache is None and method.auto_cache is None
    assert "off: not started through adlab's pipeline" in caplog.text
    method = _rd4ad(teacher_cache_gib="auto")
    method.auto_cache.plan(None, 3)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="adlab"):
        method.teacher_features(images, ["a", "b"])
    per_image = sum(t[0].numel() * 4 for t in method.model.teacher(images[:1]))
    assert f"on: 3 images x {per_image / 2**20:.1f} MiB" in caplog.text
    assert len(method.teacher_cache) == 2
    assert method.teacher_cache.used_bytes == 2 * per_image


def test_auto_refuses_what_does_not_fit(caplog, monkeypatch):
    monkeypatch.setattr(cache_policy, "available_bytes", lambda device: (4 * 2**30, "test RAM"))
    method = _rd4ad(teacher_cache_gib="auto")
    method.auto_cache.plan(None, 10**6)
    with caplog.at_level(logging.INFO, logger="adlab"):
        out = method.teacher_features(torch.rand(2, 3, 64, 64), ["a", "b"])
    assert len(out) == 3 and method.teacher_cache is None
    assert "off: 1000000 images x" in caplog.text
    assert "exceed the budget of 1.00 GiB (25% of test RAM, at most 16 GiB)" in caplog.text


def _urd() -> URD:
    return URD(
        teacher=TimmEncoder("resnet18"),
        fusion=functools.partial(OCBE),
        student=functools.partial(SkipDecoder),
        optimizer={"lr": 0.005},
        teacher_optimizer={"lr": 1e-4},
        teacher_cache_gib="auto",
    )


class RandomCrop(Transform):
    """A transform adlab does not know (could be random)."""


def _data(**kw) -> AnomalyDataModule:
    return AnomalyDataModule(dataset={"name": "synthetic"}, image_size=64, **kw)


def _lodo(resample: str) -> LodoDataModule:
    target = AnomalyDataModule(dataset={"name": "d24fad_his"}, sampler={"name": "kshot"})
    protocol = {"members": ["d24fad_his", "d24fad_lag"], "resample": resample}
    return LodoDataModule(target, protocol, Path(CONF_DIR) / "dataset")


@pytest.mark.parametrize(
    ("make_method", "datamodule", "epochs", "reason"),
    [
        (_urd, _data(), 5, "the teacher is trained (not frozen, as in URD)"),
        (_rd4ad, _data(synthesis={"name": "perlin"}), 5, "synthesis=perlin makes training"),
        (_rd4ad, _lodo("epoch"), 5, "protocol.resample=epoch redraws the few-shot episodes"),
        (_rd4ad, "random_transform", 5, "the training transform RandomCrop may be random"),
        (_rd4ad, _data(), 1, "the run has one epoch"),
    ],
    ids=["urd", "synthesis", "resampled-episodes", "random-transform", "one-epoch"],
)
def test_auto_refuses_each_unsafe_case_with_its_reason(
    make_method, datamodule, epochs, reason, caplog
):
    method = make_method() if make_method is _urd else make_method(teacher_cache_gib="auto")
    if datamodule == "random_transform":
        datamodule = _data()
        datamodule.transform = RandomCrop(64)
    with caplog.at_level(logging.INFO, logger="adlab"):
        plan(method, datamodule, images=10, epochs=epochs)
    assert method.auto_cache is None and method.teacher_cache is None
    assert f"teacher cache (method.teacher_cache_gib=auto) off: {reason}" in caplog.text


def test_safe_data_is_accepted_and_explicit_settings_bypass_auto():
    assert data_refusal(_data()) is None
    assert data_refusal(_lodo("never")) is None
    method = _rd4ad(teacher_cache_gib="auto")
    plan(method, _data(synthesis={"name": "none"}), images=10, epochs=2)
    assert method.auto_cache is not None and method.auto_cache.refusal is None
    explicit = _rd4ad(teacher_cache_gib=0.5)
    plan(explicit, _data(synthesis={"name": "perlin"}), images=10, epochs=2)  # no questions
    assert explicit.teacher_cache.budget_bytes == 2**29 and explicit.auto_cache is None
    assert caches_for(0) == (None, None) and caches_for(None) == (None, None)
    with pytest.raises(ValueError, match="method.teacher_cache_gib='sometimes'"):
        caches_for("sometimes")


def test_planned_epochs_from_max_epochs_and_max_steps():
    assert planned_epochs(200, -1, 10) == 200
    assert planned_epochs(-1, 25, 10) == 3  # URD-style iterations: 25 steps of 10 per epoch
    assert planned_epochs(None, 10, 10) == 1
    assert planned_epochs(5, 1000, 10) == 5
    assert planned_epochs(-1, -1, 10) == math.inf
