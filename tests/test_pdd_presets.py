"""PDD presets reproduce the official code's training: +cos, 2 GPUs x batch 10 as gradient
accumulation on one device, the layerloss=1 single-student row; and that accumulation of two
batches of 10 is one Adam step on the mean of the two gradients."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from adlab.compose import build_method
from adlab.methods.pdd import PDD
from adlab.models.fusion.pdd_fusion import PDDFusion
from adlab.models.pdd_loss import mse_sum
from adlab.models.students.dual_prior import DualPriorStudent
from adlab.models.teachers.dual import DualTeacher
from adlab.models.teachers.timm_encoder import TimmEncoder
from adlab.models.teachers.vmamba import VMambaEncoder

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["headct", "brainmri", "zhanglab", "chexpert", "unimedical"]


def _compose(*overrides: str, hydra: bool = False):
    fixed = [] if hydra else ["method_name=pdd", "run_name=test"]
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        return compose("config", overrides=[*overrides, *fixed], return_hydra_config=hydra)


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize(("suffix", "sign"), [("", "official"), ("_paper", "paper")])
def test_presets_train_as_the_official_code(name, suffix, sign):
    cfg = _compose(f"experiment=pdd_{name}{suffix}")
    assert cfg.method._target_ == "adlab.methods.pdd.PDD" and cfg.dataset.name == name
    assert cfg.method.loss.cos_sign == sign
    assert cfg.data.batch_size == 10 and cfg.trainer.accumulate_grad_batches == 2
    assert cfg.trainer.max_epochs == 100 and cfg.student.students == "dual"
    assert cfg.paper.source.startswith("PDD (Lu et al., CVPR 2026)")
    if name != "unimedical":
        assert set(cfg.paper.results) == {"rd4ad", "pdd"}
        assert cfg.eval.code_metrics == ["pdd"]


def test_method_alone_keeps_the_paper_equation_without_accumulation():
    cfg = _compose("method=pdd", "dataset=headct")
    assert cfg.method.loss.cos_sign == "paper" and cfg.trainer.accumulate_grad_batches == 1
    assert cfg.paper is None and list(cfg.eval.code_metrics) == []


def test_cfg_job_of_the_headct_preset_shows_the_official_settings():
    proc = subprocess.run(
        [sys.executable, "-m", "adlab.run", "experiment=pdd_headct", "--cfg", "job"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line in ("cos_sign: official", "accumulate_grad_batches: 2", "batch_size: 10"):
        assert line in proc.stdout, line


def test_ablation_multirun_sweeps_rows_and_both_cos_signs():
    cfg = _compose("experiment=pdd_ablation_zhanglab", hydra=True)
    params = cfg.hydra.sweeper.params
    assert params["pdd_ablation"] == "t1s1,t2_ina_mmu,t2_mpa,full"
    assert params["method.loss.cos_sign"] == "official,paper"
    assert cfg.method.loss.cos_sign == "official" and cfg.trainer.accumulate_grad_batches == 2
    rows = {k: v.image_auroc.zhanglab for k, v in cfg.paper.results.items()}
    assert rows == {"pdd_t1s1": 81.5, "pdd_t2_ina_mmu": 90.8, "pdd_t2_mpa": 92.9, "pdd": 94.0}


def test_t1s1_row_trains_with_the_official_single_student_loss():
    """layerloss=1: 0.02 * MSE(student, f_b) alone, no cos term (the other rows keep it)."""
    tiny = [
        "teacher.cnn.name=resnet18",
        "teacher.cnn.pretrained=false",
        "image_size=64",
        "dataset=synthetic",
    ]
    cfg = _compose("experiment=pdd_ablation_zhanglab", "pdd_ablation=t1s1", *tiny)
    assert cfg.method.loss.w_cos == 0.0
    method = build_method(cfg)
    images = torch.rand(2, 3, 64, 64)
    parts = method.training_loss({"image": images})
    teacher = method.model.teacher(images)
    fused, out = method.model.distill(teacher)
    torch.testing.assert_close(parts["loss"], 0.02 * mse_sum(out.plain, fused.targets))
    assert float(parts["cos"].detach()) != 0.0  # still logged, but not optimised
    row2 = _compose("experiment=pdd_ablation_zhanglab", "pdd_ablation=t2_ina_mmu")
    assert row2.method.loss.w_cos == 0.05


# --- accumulation: 2 batches of 10 = DDP's 2 GPUs x 10 ------------------------------------------
def _tiny_pdd() -> PDD:
    teacher = DualTeacher(
        TimmEncoder("resnet18", layers=(1, 2, 3, 4)),
        VMambaEncoder(dim=8, depths=(1, 1, 1, 1), d_state=4),
    )
    return PDD(
        teacher,
        PDDFusion,
        functools.partial(DualPriorStudent),
        optimizer={"lr": 2e-3, "betas": (0.5, 0.999)},
        loss={"cos_sign": "official"},
    )


class _Gradients(pl.Callback):
    """The gradients Lightning hands to the optimiser."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for name, p in pl_module.named_parameters():
            if p.grad is not None:
                self.grads[name] = p.grad.detach().clone()


def test_accumulating_two_batches_of_10_is_one_adam_step_on_the_mean_gradient():
    """Lightning with accumulate_grad_batches=2 over two batches of 10 = DDP on 2 GPUs with batch
    10 each: BatchNorm normalises each batch of 10 in train mode (running statistics updated per
    batch, as each GPU does), and the one Adam step uses the mean of the two batch gradients."""
    torch.manual_seed(0)
    method = _tiny_pdd()
    reference = copy.deepcopy(method)
    batches = [
        {"image": torch.rand(10, 3, 64, 64), "label": torch.zeros(10, dtype=torch.long),
         "path": [f"{b}_{i}.png" for i in range(10)]}
        for b in range(2)
    ]  # fmt: skip
    grab = _Gradients()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[grab],
    )
    trainer.fit(method, train_dataloaders=DataLoader(batches, batch_size=None))
    assert trainer.global_step == 1

    # the reference: each half batch's gradient on its own, their mean, one Adam step
    reference.train()
    optimizer = reference.configure_optimizers()
    halves = []
    for batch in batches:
        optimizer.zero_grad()
        reference.training_loss(batch)["loss"].backward()
        halves.append(
            {n: p.grad.clone() for n, p in reference.named_parameters() if p.grad is not None}
        )
    first_only = copy.deepcopy(reference)
    for name, p in reference.named_parameters():
        if name in halves[0]:
            p.grad = (halves[0][name] + halves[1][name]) / 2
    optimizer.step()

    assert set(grab.grads) == set(halves[0])
    for name, grad in grab.grads.items():
        mean = (halves[0][name] + halves[1][name]) / 2
        torch.testing.assert_close(grad, mean, rtol=1e-4, atol=1e-9)
    total = sum(float((halves[0][n] + halves[1][n]).norm()) for n in grab.grads)
    assert sum(float(g.norm()) for g in grab.grads.values()) == pytest.approx(total / 2, rel=1e-4)
    # parameters and BatchNorm running statistics after the step
    got, want = method.state_dict(), reference.state_dict()
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-7, msg=key)

    # one step on the first batch alone (no accumulation) lands elsewhere
    optimizer = first_only.configure_optimizers()
    for name, p in first_only.named_parameters():
        if name in halves[0]:
            p.grad = halves[0][name]
    optimizer.step()
    moved = first_only.state_dict()
    assert max(float((moved[k] - got[k]).abs().max()) for k in halves[0]) > 1e-3
