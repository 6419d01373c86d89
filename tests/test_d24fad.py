"""D24FAD's learn-to-weight, network and training losses on a random ResNet18 teacher."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from adlab.methods.d24fad import D24FAD
from adlab.models.features import CompositionError
from adlab.models.fewshot.learn_to_weight import LearnToWeight, MeanOfSupports
from adlab.models.fusion.identity import LastTap
from adlab.models.students.rd_decoder import ReverseDecoder
from adlab.models.teachers.timm_encoder import TimmEncoder

OPT = {"lr": 1e-4, "betas": [0.5, 0.999]}


def make(layers=(1, 2, 3, 4), **kwargs) -> D24FAD:
    teacher = TimmEncoder("resnet18", list(layers), pretrained=False)
    fusion, student = functools.partial(LastTap), functools.partial(ReverseDecoder)
    return D24FAD(teacher, fusion, student, optimizer=OPT, **kwargs)


def hand_weighted(ltw, i, query, support):
    """Per query: K_j = W s_j + b, logit_j = <K_j, q> / sqrt(C), w = softmax over j,
    out = sum_j w_j s_j."""
    weight, bias = ltw.proj[i].weight[:, :, 0, 0], ltw.proj[i].bias
    channels = query.shape[1]
    outs, weights = [], []
    for b in range(query.shape[0]):
        logits = []
        for j in range(support.shape[1]):
            key = torch.einsum("oc,chw->ohw", weight, support[b, j]) + bias[:, None, None]
            logits.append((key * query[b]).sum() / math.sqrt(channels))
        w = torch.softmax(torch.stack(logits), dim=0)
        weights.append(w)
        outs.append(sum(w[j] * support[b, j] for j in range(support.shape[1])))
    return torch.stack(outs), torch.stack(weights)


def test_learn_to_weight_matches_a_hand_computation():
    torch.manual_seed(0)
    ltw = LearnToWeight([4, 8]).double()
    query = [0.3 * torch.randn(2, 4, 3, 3).double(), 0.3 * torch.randn(2, 8, 2, 2).double()]
    support = [0.3 * torch.randn(2, 3, 4, 3, 3).double(), 0.3 * torch.randn(2, 3, 8, 2, 2).double()]
    out = ltw(query, support)
    for i in range(2):
        expected, weights = hand_weighted(ltw, i, query[i], support[i])
        assert torch.allclose(out[i], expected, atol=1e-12)
        got = ltw.weights(i, query[i], support[i]).detach()
        assert torch.allclose(got, weights, atol=1e-12)
        assert torch.allclose(got.sum(1), torch.ones(2, dtype=torch.float64))  # over the shots
        assert 0.05 < float(got.min()) and float(got.max()) < 0.95  # a real mix at this scale


def test_learn_to_weight_scales_by_sqrt_channels_not_the_map_size():
    ltw = LearnToWeight([4])
    with torch.no_grad():
        ltw.proj[0].weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        ltw.proj[0].bias.zero_()
    query = torch.ones(1, 4, 2, 2)
    support = torch.stack([torch.zeros(4, 2, 2), torch.ones(4, 2, 2) * 0.25]).unsqueeze(0)
    # logits: 0 and (16 * 0.25) / sqrt(4) = 2
    expected = torch.softmax(torch.tensor([0.0, 2.0]), 0)
    assert torch.allclose(ltw.weights(0, query, support)[0], expected)


def test_a_shared_support_set_equals_the_same_set_per_query():
    torch.manual_seed(1)
    ltw = LearnToWeight([4])
    query = [torch.randn(3, 4, 2, 2)]
    shared = torch.randn(2, 4, 2, 2)
    per_query = shared.unsqueeze(0).expand(3, -1, -1, -1, -1).contiguous()
    assert torch.allclose(ltw(query, [shared])[0], ltw(query, [per_query])[0], atol=1e-6)
    mean = MeanOfSupports()(query, [per_query])[0]
    assert torch.allclose(mean, shared.mean(0).expand(3, -1, -1, -1))


def test_fusion_none_needs_the_layer4_tap():
    with pytest.raises(CompositionError, match=r"teacher.layers=\[1,2,3,4\]"):
        make(layers=(1, 2, 3))


def test_loss_is_ssd_plus_a_tenth_of_tsd_with_one_decoder_pass_per_support():
    torch.manual_seed(0)
    method = make()
    method.train()
    batch = {"image": torch.rand(4, 3, 32, 32), "support": torch.rand(4, 2, 3, 32, 32)}
    parts = method.training_loss(batch)
    assert torch.allclose(parts["loss"], parts["ssd"] + 0.1 * parts["tsd"])
    bns = [m for m in method.model.student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {int(m.num_batches_tracked) for m in bns} == {3}  # the query pass + one per support
    parts["loss"].backward()
    assert method.model.weigh.proj[0].weight.grad is not None
    assert all(p.grad is None for p in method.model.teacher.parameters())


def test_frozen_projections_still_pass_gradients_to_the_supports():
    method = make(train_projections=False)
    trained = {id(p) for g in method.parameter_groups() for p in g["params"]}
    assert not any(id(p) in trained for p in method.model.weigh.parameters())
    assert not any(p.requires_grad for p in method.model.weigh.parameters())
    support = torch.rand(2, 2, 3, 32, 32)
    tsd_free = make(train_projections=False, loss={"ssd": 1.0, "tsd": 0.0})
    tsd_free.train()
    tsd_free.training_loss({"image": torch.rand(2, 3, 32, 32), "support": support})[
        "loss"
    ].backward()
    grads = [p.grad for p in tsd_free.model.student.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_ablation_switches():
    tsd_only = make(loss={"ssd": 0.0, "tsd": 1.0})
    parts = tsd_only.training_loss({"image": torch.rand(2, 3, 32, 32)})  # no support pass
    assert set(parts) == {"loss", "tsd"} and torch.equal(parts["loss"], parts["tsd"])
    assert isinstance(make(learn_to_weight=False).model.weigh, MeanOfSupports)
    with pytest.raises(ValueError, match="method.loss keys"):
        make(loss={"ssd": 1.0, "kd": 1.0})
    with pytest.raises(ValueError, match="both 0"):
        make(loss={"ssd": 0.0, "tsd": 0.0})


def test_test_map_compares_the_query_with_its_weighted_supports_not_the_teacher():
    torch.manual_seed(0)
    net = make().model.eval()
    supports = torch.rand(3, 3, 32, 32)
    with pytest.raises(RuntimeError, match="set_references"):
        net(torch.rand(1, 3, 32, 32))
    net.set_references(supports)
    images = torch.rand(2, 3, 32, 32)
    maps, scores = net(images)
    query = net.decode(images)
    weighted = net.weigh(query, net.decode(supports))
    total = sum(
        F.interpolate((1 - F.cosine_similarity(q, w, dim=1)).unsqueeze(1), size=(32, 32),
                      mode="bilinear", align_corners=True).squeeze(1)
        for q, w in zip(query, weighted)
    )  # fmt: skip
    from adlab.scoring import gaussian_blur

    assert torch.allclose(maps, gaussian_blur(total, 4.0), atol=1e-5)
    assert torch.allclose(scores, maps.flatten(1).amax(1))
    # each image is smoothed on its own: a batch of one gives the same map
    assert torch.allclose(net(images[:1]).maps, maps[:1], atol=1e-5)


def test_references_survive_a_state_dict_round_trip():
    torch.manual_seed(0)
    net = make().model.eval()
    net.set_references(torch.rand(5, 3, 32, 32))
    state = net.state_dict()
    assert state["support_0"].shape[0] == 5
    fresh = make().model.eval()
    assert not fresh.has_references()
    fresh.load_state_dict(state, strict=True)
    assert fresh.has_references() and fresh.support_2.shape == net.support_2.shape
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(fresh(images).maps, net(images).maps)
