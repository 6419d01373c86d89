"""The PDD LightningModule: gradients, frozen teachers, scoring from both students, the ablation
configs composed by Hydra, and an end-to-end run of `python -m adlab.run method=pdd`."""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from adlab.compose import build_method
from adlab.methods.pdd import PDD
from adlab.models.features import CompositionError
from adlab.models.fusion.pdd_fusion import PDDFusion
from adlab.models.students.dual_prior import DualPriorStudent
from adlab.models.teachers.dual import DualTeacher
from adlab.models.teachers.timm_encoder import TimmEncoder
from adlab.models.teachers.vmamba import VMambaEncoder

REPO = Path(__file__).resolve().parents[1]
OPT = {"lr": 2e-3, "betas": (0.5, 0.999)}
# Tiny teachers: random-init ResNet18 (layer1..4) and a one-block-per-stage VMamba of width 8.
TINY = [
    "method=pdd",
    "teacher.cnn.name=resnet18",
    "teacher.cnn.pretrained=false",
    "teacher.vmamba.weights=null",
    "+teacher.vmamba.dim=8",
    "+teacher.vmamba.depths=[1,1,1,1]",
    "+teacher.vmamba.d_state=4",
    "image_size=64",
]


def _teacher(vmamba: bool = True) -> DualTeacher:
    cnn = TimmEncoder("resnet18", layers=(1, 2, 3, 4))
    vm = VMambaEncoder(dim=8, depths=(1, 1, 1, 1), d_state=4) if vmamba else None
    return DualTeacher(cnn, vm)


def _pdd(vmamba: bool = True, mpa: bool = True, students: str = "dual", **kw) -> PDD:
    return PDD(
        _teacher(vmamba),
        functools.partial(PDDFusion, mpa=mpa),
        functools.partial(DualPriorStudent, students=students),
        optimizer=OPT,
        **kw,
    )


def test_gradients_reach_adapters_and_students_but_never_the_teachers():
    method = _pdd()
    method.train()
    images = torch.rand(2, 3, 64, 64)
    parts = method.training_loss({"image": images})
    assert set(parts) == {"loss", "mse_prior", "cos", "mse_plain", "diversity"}
    parts["loss"].backward()
    fusion = method.model.fusion
    for name, module in [
        ("ina", fusion.ina),
        ("mmu", fusion.mmu),
        ("mpa", fusion.mpa),
        ("student", method.model.student),
    ]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert all(p.grad is None and not p.requires_grad for p in method.model.teacher.parameters())
    assert not method.model.teacher.training and method.training
    optimised = {id(p) for g in method.parameter_groups() for p in g["params"]}
    assert not optimised & {id(p) for p in method.model.teacher.parameters()}
    assert optimised == {id(p) for p in [*fusion.parameters(), *method.model.student.parameters()]}


def test_targets_carry_the_adapter_gradient():
    """f_b is not detached: the MSE(f_b, S_n) term alone moves the InA adapters."""
    method = _pdd(loss={"w_mse_prior": 0.0, "w_cos": 0.0, "w_div": 0.0})
    method.train()
    method.training_loss({"image": torch.rand(2, 3, 64, 64)})["loss"].backward()
    assert float(method.model.fusion.ina.adapters[0].conv1.weight.grad.abs().sum()) > 0
    # the priors do not enter the plain student: MPA gets no gradient from this term
    assert all(
        p.grad is None or float(p.grad.abs().sum()) == 0
        for p in method.model.fusion.mpa.parameters()
    )


def test_scores_come_from_both_students_and_each_image_alone():
    method = _pdd().eval()
    images = torch.rand(3, 3, 64, 64)
    pairs = method.model.feature_pairs(images)
    assert len(pairs) == 6
    fused = method.model.fusion(*method.model.teacher(images))
    out = method.model.student(fused.manifold, fused.priors)
    for (t, p), want_t, want_p in zip(pairs, fused.targets * 2, out.prior + out.plain):
        torch.testing.assert_close(t, want_t)
        torch.testing.assert_close(p, want_p)
    maps, scores = method.predict_maps(images)
    assert maps.shape == (3, 64, 64)
    # every image of the batch is scored on its own (the official eval scored only the first)
    for i in range(3):
        _, alone = method.predict_maps(images[i : i + 1])
        torch.testing.assert_close(alone, scores[i : i + 1], rtol=1e-4, atol=1e-5)
    assert len(set(scores.tolist())) == 3


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    method = _pdd()
    method.train()
    opt = method.configure_optimizers()
    batch = {"image": torch.rand(4, 3, 64, 64)}
    losses = []
    for _ in range(6):
        loss = method.training_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="fusion.mpa=true"):
        _pdd(mpa=False, students="dual")
    with pytest.raises(ValueError, match="unknown method.loss keys"):
        _pdd(loss={"tau_mid": 0.5})
    with pytest.raises(ValueError, match="cos_sign"):
        _pdd(loss={"cos_sign": "negative"})
    with pytest.raises(CompositionError, match="teacher=vmamba_wrn50"):
        PDD(
            TimmEncoder("resnet18", layers=(1, 2, 3, 4)),
            PDDFusion,
            DualPriorStudent,
            optimizer=OPT,
        )


def _compose(*overrides: str, hydra: bool = False):
    """The composed config; without the hydra node, names that interpolate it are pinned."""
    fixed = [] if hydra else ["method_name=pdd", "run_name=test"]
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        return compose("config", overrides=[*overrides, *fixed], return_hydra_config=hydra)


def test_method_config_follows_the_official_code():
    cfg = _compose("method=pdd")
    assert cfg.teacher.cnn.layers == [1, 2, 3, 4] and cfg.teacher.vmamba.variant.startswith("van")
    assert cfg.fusion._target_.endswith("PDDFusion") and cfg.student.depths == [2, 2, 2]
    assert cfg.method.optimizer.lr == 0.002 and cfg.method.scheduler.T_max == 40
    assert cfg.method.scheduler.eta_min == pytest.approx(0.1 * cfg.method.optimizer.lr)
    assert (cfg.method.loss.tau_low, cfg.method.loss.tau_high) == (0.75, 0.30)
    assert cfg.data.batch_size == 10 and cfg.image_size == 256


@pytest.mark.parametrize("name", ["headct", "brainmri", "zhanglab", "chexpert", "unimedical"])
def test_experiment_presets_compose_pdd_on_their_dataset(name):
    cfg = _compose(f"experiment=pdd_{name}")
    assert cfg.method._target_ == "adlab.methods.pdd.PDD" and cfg.dataset.name == name
    assert cfg.trainer.max_epochs == 100 and cfg.student.students == "dual"


@pytest.mark.parametrize(
    ("row", "n_pairs", "dual", "mpa"),
    [
        ("t1s1", 3, False, False),
        ("t2_ina_mmu", 3, True, False),
        ("t2_mpa", 3, True, True),
        ("full", 6, True, True),
    ],
)
def test_ablation_rows_build_the_paper_variants(row, n_pairs, dual, mpa):
    overrides = TINY if dual else [o for o in TINY if "vmamba" not in o]
    method = build_method(_compose(*overrides, f"pdd_ablation={row}", "dataset=synthetic"))
    assert (method.model.teacher.vmamba is not None) == dual and method.model.fusion.dual == dual
    assert (method.model.fusion.mpa is not None) == mpa
    assert len(method.model.feature_pairs(torch.rand(1, 3, 64, 64))) == n_pairs
    named = _compose("method=pdd", f"pdd_ablation={row}", hydra=True)._get_node("method_name")
    want = "${hydra:runtime.choices.method}" if row == "full" else f"pdd_{row}"
    assert named._value() == want  # report rows: pdd_t1s1, ..., pdd


@pytest.mark.e2e
def test_run_entry_point_trains_pdd_and_reports_metrics(tmp_path):
    """`python -m adlab.run method=pdd` on the synthetic benchmark with tiny teachers."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "ADLAB_DATA": str(tmp_path / "data"),
        "PYTHONPATH": str(REPO),
    }
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "dataset=synthetic",
        "dataset.n_train=16",
        "dataset.n_test_normal=8",
        "dataset.n_test_anomalous=8",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "trainer.max_epochs=3",
        "method.teacher_cache_gib=0.5",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "eval.n_visuals=2",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "adlab.run", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert any(r.get("train/diversity_epoch") for r in rows)
    # the teacher cache holds all 16 training images after the first epoch
    hits = [float(r["teacher_cache/hit_rate"]) for r in rows if r.get("teacher_cache/hit_rate")]
    assert hits == [0.0, 1.0, 1.0], hits
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "pdd"
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= results["metrics"][key] <= 1.0, results["metrics"]
    assert results["provenance"]["weights"] == {"teacher.cnn": "random", "teacher.vmamba": "random"}
    # adlab.evaluate rebuilds PDD from the checkpoint (both teachers without downloads) and
    # reproduces the test metrics
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "adlab.evaluate", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
         "dataset=synthetic", "dataset.n_train=16", "dataset.n_test_normal=8",
         "dataset.n_test_anomalous=8", "data.eval_batch_size=16", "logger=none",
         "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = json.loads((out / "results.json").read_text())["metrics"]
    for key, value in results["metrics"].items():
        assert again[key] == pytest.approx(value, abs=1e-6), key
