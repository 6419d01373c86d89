"""The frozen-teacher cache: exact features, the teacher run once per image, the memory budget,
and both methods giving the same losses with and without it."""

from __future__ import annotations

import copy
import functools
from typing import NamedTuple

import pytest
import torch
from test_pdd_method import _pdd  # the tiny PDD (ResNet18 + width-8 VMamba) of its tests
from torch import nn

from adlab.methods.rd4ad import RD4AD
from adlab.methods.teacher_cache import TeacherCache, flatten
from adlab.models.fusion.ocbe import OCBE
from adlab.models.students.rd_decoder import ReverseDecoder
from adlab.models.teachers.timm_encoder import TimmEncoder


class Pair(NamedTuple):
    cnn: list
    extra: torch.Tensor | None


class CountingTeacher(nn.Module):
    """Two conv taps in a NamedTuple with a None field; counts the images it has seen."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        first = self.a(x)
        return Pair([first, self.b(first)], None)


def _bytes_per_image(size: int) -> int:
    return 4 * (4 * size * size + 6 * (size // 2) ** 2)


def test_flatten_round_trips_lists_namedtuples_and_none():
    t = [torch.zeros(1), torch.ones(2)]
    tree = Pair([t[0], (t[1],)], None)
    leaves, rebuild = flatten(tree)
    assert leaves == t
    back = rebuild([x + 1 for x in leaves])
    assert isinstance(back, Pair) and back.extra is None and isinstance(back.cnn[1], tuple)
    assert torch.equal(back.cnn[1][0], t[1] + 1)
    with pytest.raises(TypeError, match="dict"):
        flatten({"a": t[0]})


def test_cache_gives_the_teachers_output_running_it_once_per_image():
    torch.manual_seed(0)
    teacher = CountingTeacher().eval()
    images = torch.rand(4, 3, 16, 16)
    keys = ["a.png", "b.png", "c.png", "d.png"]
    cache = TeacherCache(1.0)
    first = cache(teacher, images[:2], keys[:2])
    order = [3, 1, 0, 2]
    mixed = cache(teacher, images[order], [keys[i] for i in order])
    again = cache(teacher, images[order], [keys[i] for i in order])
    assert teacher.seen == 4  # a, b, then only c and d
    with torch.no_grad():
        want = teacher(images[order])
    for got in (mixed, again):
        assert isinstance(got, Pair) and got.extra is None
        for g, w in zip(got.cnn, want.cnn):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
    torch.testing.assert_close(first.cnn[1], want.cnn[1][[2, 1]], rtol=0, atol=1e-6)
    assert len(cache) == 4 and cache.used_bytes == 4 * _bytes_per_image(16)
    assert cache.take_hit_rate() == pytest.approx(6 / 10)  # 0 of 2, 2 of 4, 4 of 4
    assert cache.take_hit_rate() is None


def test_kept_features_are_copies_that_callers_cannot_change():
    teacher = CountingTeacher().eval()
    images = torch.rand(2, 3, 8, 8)
    cache = TeacherCache(1.0)
    out = cache(teacher, images, ["x", "y"])
    want = out.cnn[0].clone()
    out.cnn[0].zero_()
    hit = cache(teacher, images, ["x", "y"])
    hit.cnn[0].add_(5)
    assert torch.equal(cache(teacher, images, ["x", "y"]).cnn[0], want)


def test_budget_keeps_what_fits_and_recomputes_the_rest():
    teacher = CountingTeacher().eval()
    images = torch.rand(3, 3, 8, 8)
    keys = ["p", "q", "r"]
    cache = TeacherCache(2.5 * _bytes_per_image(8) / 2**30)
    cache(teacher, images, keys)
    assert len(cache) == 2 and cache.used_bytes == 2 * _bytes_per_image(8)
    cache(teacher, images, keys)
    assert teacher.seen == 3 + 1  # only "r" again


def test_bad_budget_and_key_count_raise():
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="teacher_cache_gib"):
            TeacherCache(bad)
    with pytest.raises(ValueError, match="2 cache keys for a batch of 3"):
        TeacherCache(1)(CountingTeacher(), torch.rand(3, 3, 8, 8), ["a", "b"])


def _rd4ad(**kw) -> RD4AD:
    return RD4AD(
        teacher=TimmEncoder("resnet18", pretrained=False),
        fusion=functools.partial(OCBE),
        student=functools.partial(ReverseDecoder),
        optimizer={"lr": 0.005},
        **kw,
    )


@pytest.mark.parametrize("build", [_rd4ad, _pdd], ids=["rd4ad", "pdd"])
def test_methods_give_the_same_losses_with_the_cache_and_run_the_teacher_once(build):
    torch.manual_seed(0)
    plain = build()
    cached = copy.deepcopy(plain)
    cached.teacher_cache = TeacherCache(1.0)
    calls = []
    cached.model.teacher.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    plain.train()
    cached.train()
    images = torch.rand(4, 3, 64, 64)
    paths = [f"img{i}.png" for i in range(4)]
    for order in ([0, 1, 2, 3], [2, 0, 3, 1]):
        batch = {"image": images[order], "path": [paths[i] for i in order]}
        want = plain.training_loss(batch)
        got = cached.training_loss(batch)
        for name in want:
            assert torch.equal(got[name], want[name]), name  # bit for bit
    assert calls == [4]  # the second epoch is served from the cache
    cached.eval()
    cached.predict_maps(images[:2])  # scoring never reads or fills the cache
    assert calls == [4, 2] and len(cached.teacher_cache) == 4
