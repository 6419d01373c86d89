"""The RD4AD LightningModule: frozen teacher, what is optimised, and that training learns."""

import functools

import pytest
import torch

from adlab.methods.rd4ad import RD4AD
from adlab.models.fusion.ocbe import OCBE
from adlab.models.students.rd_decoder import ReverseDecoder
from adlab.models.teachers.timm_encoder import TimmEncoder


def _method(**kw):
    return RD4AD(
        teacher=TimmEncoder("resnet18", pretrained=False),
        fusion=functools.partial(OCBE),
        student=functools.partial(ReverseDecoder),
        optimizer={"lr": 0.005, "betas": (0.5, 0.999)},
        **kw,
    )


def test_teacher_is_frozen_and_stays_in_eval_mode():
    method = _method()
    method.train()
    assert not method.model.teacher.training
    assert method.model.fusion.training and method.model.student.training
    assert all(not p.requires_grad for p in method.model.teacher.parameters())
    optimised = {id(p) for g in method.parameter_groups() for p in g["params"]}
    assert optimised == {
        id(p) for p in [*method.model.fusion.parameters(), *method.model.student.parameters()]
    }
    assert method.input_divisor == 32
    assert method.weights_sources() == {"teacher": "random"}


def test_config_values_win_over_teacher_derived_shapes():
    method = RD4AD(
        teacher=TimmEncoder("resnet18", pretrained=False),
        fusion=functools.partial(OCBE, layers=1),
        student=functools.partial(ReverseDecoder),
        optimizer={"lr": 0.005},
    )
    assert len(method.model.fusion.oce) == 1


def test_training_steps_reduce_the_loss_and_leave_the_teacher_untouched():
    method = _method()
    opt = method.configure_optimizers()
    before = {k: v.clone() for k, v in method.model.teacher.state_dict().items()}
    batch = {"image": torch.rand(4, 3, 64, 64)}
    method.train()
    losses = []
    for _ in range(8):
        loss = method.training_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    for k, v in method.model.teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"teacher tensor {k} changed"


def test_predict_maps_gives_maps_at_input_size_and_max_scores():
    method = _method().eval()
    maps, scores = method.predict_maps(torch.rand(2, 3, 64, 64))
    assert maps.shape == (2, 64, 64)
    torch.testing.assert_close(scores, maps.flatten(1).amax(1))


def test_pixel_cos_option_and_bad_loss_name():
    assert _method(loss="pixel_cos").loss_name == "pixel_cos"
    with pytest.raises(ValueError, match="method.loss"):
        _method(loss="mse")


def test_fused_adam_matches_the_reference_update():
    torch.manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(50, 20)) for _ in range(3)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    from adlab.methods.base import make_adam

    fused = make_adam([{"params": params}], lr=0.005, betas=(0.5, 0.999))
    plain = make_adam([{"params": twins}], lr=0.005, betas=(0.5, 0.999), fused=False)
    assert fused.defaults.get("fused") and not plain.defaults.get("fused")
    for _ in range(5):
        grads = [torch.randn(50, 20) for _ in params]
        for p, q, g in zip(params, twins, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
        assert not torch.equal(p, torch.zeros_like(p))
