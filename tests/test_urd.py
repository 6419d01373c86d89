"""URD: GII and the losses against hand computations, the two optimisation steps (what changes,
how many steps), and composition from the configs (tiny random ResNet18 teachers)."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_e2e_run import adlab
from torch.utils.data import DataLoader

from adlab.compose import ConfigError, build_method, method_from_checkpoint, model_config
from adlab.data.batch import collate
from adlab.methods.urd import URD
from adlab.models.features import CompositionError
from adlab.models.fusion.ocbe import OCBE
from adlab.models.fusion.skip_fusion import SkipFusion, guided_injection
from adlab.models.students.rd_decoder import ReverseDecoder
from adlab.models.students.skip_decoder import SkipDecoder
from adlab.models.teachers.expert import ExpertTeacher
from adlab.models.teachers.timm_encoder import TimmEncoder
from adlab.models.urd_loss import cascaded_masks, student_losses, teacher_losses

REPO = Path(__file__).resolve().parents[1]
OPT = {"lr": 0.005, "betas": (0.5, 0.999)}
TEACHER_OPT = {"lr": 1e-4, "betas": (0.5, 0.999)}


def _urd(gii: bool = True, **kw) -> URD:
    return URD(
        teacher=TimmEncoder("resnet18", pretrained=False),
        fusion=functools.partial(OCBE),
        student=functools.partial(SkipDecoder, gii=gii),
        optimizer=OPT,
        teacher_optimizer=TEACHER_OPT,
        **kw,
    )


def _batch(n: int = 2, size: int = 32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
    image = torch.randn(n, 3, size, size, generator=g)
    damaged = torch.where(mask.bool(), torch.randn(n, 3, size, size, generator=g), image)
    return {"image": image, "augmented": damaged, "synthetic_mask": mask}


# --- GII and skip fusion ---------------------------------------------------------------------
def test_guided_injection_matches_a_hand_computation():
    # 4 pixels of 2 channels; the teacher is (1, 0) everywhere, so s = decoded_x / |decoded|.
    decoded = torch.tensor([[1.0, 0.0, 3.0, -1.0], [0.0, 2.0, 4.0, 0.0]]).view(1, 2, 1, 4)
    teacher = torch.tensor([[1.0] * 4, [0.0] * 4]).view(1, 2, 1, 4)
    injected = torch.tensor([[5.0, 5.0, 5.0, 5.0], [7.0, 7.0, 7.0, 7.0]]).view(1, 2, 1, 4)
    decoded.requires_grad_(True)
    out = guided_injection(decoded, injected, teacher)
    s = [1.0, 0.0, 0.6, -1.0]
    want = [[5.0, 0.0, 5 * 0.6 + 3 * 0.4, -5 + 2 * -1], [7.0, 2.0, 7 * 0.6 + 4 * 0.4, -7 + 0]]
    torch.testing.assert_close(out.view(2, 4), torch.tensor(want))
    out.sum().backward()  # no gradient through s: d out / d decoded = 1 - s
    torch.testing.assert_close(decoded.grad.view(2, 4), torch.tensor([[1 - v for v in s]] * 2))


def _identity_(seq: torch.nn.Sequential, blocks: int = 1) -> None:
    conv = seq[0]
    torch.nn.init.zeros_(conv.weight)
    k = conv.kernel_size[0] // 2
    for b in range(blocks):
        for c in range(conv.out_channels):
            conv.weight.data[c, b * conv.out_channels + c, k, k] = 1.0


def test_skip_fusion_matches_a_hand_computation():
    """Identity convolutions and eval-mode BatchNorm (x / sqrt(1 + eps)), positive inputs so
    every ReLU passes: out = k (D + k (k (T + k pool(F)) s + D (1 - s)))."""
    fusion = SkipFusion(fine_channels=2, channels=2, gii=True).eval()
    for seq in (fusion.down, fusion.encoder, fusion.guide):
        _identity_(seq)
    _identity_(fusion.merge, blocks=2)  # [I | I]: decoded + injected
    d, t, f = torch.rand(1, 2, 2, 2) + 0.1, torch.rand(1, 2, 2, 2) + 0.1, torch.rand(1, 2, 4, 4)
    k = 1 / math.sqrt(1 + 1e-5)
    pool = f.view(1, 2, 2, 2, 2, 2).mean((3, 5))  # bilinear x0.5 = 2x2 mean
    s = (d * t).sum(1, keepdim=True) / (d.norm(dim=1, keepdim=True) * t.norm(dim=1, keepdim=True))
    want = k * (d + k * (k * (t + k * pool) * s + d * (1 - s)))
    torch.testing.assert_close(fusion(d, f, t), want)
    plain = SkipFusion(2, 2, gii=False).eval()
    assert plain.guide is None and not plain.gii
    for seq in (plain.down, plain.encoder):
        _identity_(seq)
    _identity_(plain.merge, blocks=2)
    torch.testing.assert_close(plain(d, f, t), k * (d + k * (t + k * pool)))


def test_skip_decoder_shapes_and_routes():
    teacher = TimmEncoder("resnet18", pretrained=False).eval()
    feats = teacher(torch.rand(2, 3, 64, 64))
    code = OCBE.from_features(teacher.features)(feats)
    for gii in (True, False):
        student = SkipDecoder.from_features(teacher.features, gii=gii)
        merges = [tuple(s.merge[0].weight.shape[:2]) for s in student.skips]
        assert merges == [(256, 512), (128, 256)]
        assert all((s.guide is not None) == gii for s in student.skips)
        outs = student(code, feats)
        assert [o.shape for o in outs] == [f.shape for f in feats]
    # The wrapped decoder keeps RD4AD's keys, under `decoder.`.
    plain = {k for k in ReverseDecoder.from_features(teacher.features).state_dict()}
    assert {k for k in student.state_dict() if k.startswith("decoder.")} == {
        f"decoder.{k}" for k in plain
    }


def test_student_init_is_xavier_on_convs_and_default_on_transposed_convs():
    torch.manual_seed(3)
    net = _urd().model
    merge = net.student.skips[0].merge[0].weight  # 256 x 512 x 3 x 3
    fan_in, fan_out = 512 * 9, 256 * 9
    assert merge.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.02)
    oce = net.fusion.oce[0].conv1.weight  # OCBE convs too, as the official Student.apply
    assert oce.std().item() == pytest.approx(math.sqrt(2 / sum(oce.shape[:2]) / 9), rel=0.02)
    deconv = net.student.decoder.stages[0][0].conv1.weight  # ResNet18 basic block: 2x2 deconv
    bound = 1 / math.sqrt(deconv.shape[1] * 4)  # kaiming_uniform(a=sqrt 5) of ConvTranspose2d
    assert deconv.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


# --- losses ------------------------------------------------------------------------------------
def test_mask_cascade_differs_from_direct_resizing_by_hand():
    """Columns [0, 0, 0, 1, 0] at 5 px: to 4 px (align_corners: positions 0, 4/3, 8/3, 4) the
    third value is 1/3 * 0 + 2/3 * 1 -> 1, giving [0, 0, 1, 0]; to 3 px from that (positions 0,
    1.5, 3): [0, 0.5 -> 1, 0]. Resized directly from 5 px (positions 0, 2, 4) it would be 0."""
    mask = torch.tensor([0.0, 0, 0, 1, 0]).repeat(5, 1).view(1, 1, 5, 5)
    m4, m3 = cascaded_masks(mask, [(4, 4), (3, 3)])
    torch.testing.assert_close(m4, torch.tensor([0.0, 0, 1, 0]).repeat(4, 1).view(1, 1, 4, 4))
    torch.testing.assert_close(m3, torch.tensor([0.0, 1, 0]).repeat(3, 1).view(1, 1, 3, 3))
    assert cascaded_masks(mask, [(3, 3)])[0].sum() == 0


def test_teacher_and_student_losses_by_hand():
    """Two pixels, two channels: target (1,0),(0,1); a prediction (1,0),(0,2) agrees per pixel
    (pixel-cos 0) but not as one flattened map (flat-cos 1 - 3/sqrt(10))."""
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    scaled = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(1, 2, 1, 2)
    ortho = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 2, 1, 2)  # cos 0 at both pixels
    flat = 1 - 3 / math.sqrt(10)
    # Mask: pixel 1 anomalous at 1x2 (a 1x4 mask cascades to [0, 1] at 1x2).
    mask = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 4)
    parts = teacher_losses([scaled], [ortho], [target], [scaled], mask)
    # pixel-cos(T(x), E(x)) = 0; L1(1 - cos(T(x~), E(x)) = [1, 1], mask [0, 1]) = 0.5;
    # flat-cos(T(x~), E(x~)): (0,1,1,0).(1,0,0,2) = 0 -> 1.
    want = {"teacher_pixel": 0.0, "teacher_mask": 0.5, "teacher_flat": 1.0}
    for key, value in want.items():
        assert parts[key].item() == pytest.approx(value, abs=1e-6), key
    assert parts["teacher"].item() == pytest.approx(1.5, abs=1e-6)
    # Student: S(x) = scaled, S(x~) = target, T(x) = target, E(x) = mixed (flat (1, 0, 1, 1)).
    mixed = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    s = student_losses([scaled], [target], [target], [mixed])
    want = {
        "student_t_normal": flat,
        "student_t_damaged": 0.0,
        "student_e_normal": 1 - 3 / math.sqrt(15),  # (1,0,1,1).(1,0,0,2) / (sqrt 3 sqrt 5)
        "student_e_damaged": 1 - 2 / math.sqrt(6),  # (1,0,1,1).(1,0,0,1) / (sqrt 3 sqrt 2)
    }
    for key, value in want.items():
        assert s[key].item() == pytest.approx(value, abs=1e-6), key
    assert s["student"].item() == pytest.approx(sum(want.values()), abs=1e-6)


def test_synthetic_mask_of_the_wrong_shape_is_named():
    method = _urd()
    batch = _batch()
    batch["synthetic_mask"] = batch["synthetic_mask"][:, 0]
    with pytest.raises(ValueError, match="synthetic_mask"):
        method.teacher_losses(batch, method.expert_features(batch["image"]))


# --- training ------------------------------------------------------------------------------------
def _steps(method: URD, batch: dict, n: int) -> list[dict]:
    """The training step without a Trainer: both updates, as training_step does them."""
    opt_t, opt_s = method.configure_optimizers()
    method.train()
    history = []
    for _ in range(n):
        e_normal = method.expert_features(batch["image"])
        parts = method.teacher_losses(batch, e_normal)
        opt_t.zero_grad()
        parts["teacher"].backward()
        opt_t.step()
        parts.update(method.student_losses(batch, e_normal))
        opt_s.zero_grad()
        parts["student"].backward()
        opt_s.step()
        history.append({k: v.item() for k, v in parts.items()})
    return history


def test_losses_decrease_over_a_few_steps():
    history = _steps(_urd(), _batch(n=2), 3)
    assert history[-1]["student"] < 0.85 * history[0]["student"], history
    assert history[-1]["teacher"] < history[0]["teacher"], history


class _Count(pl.Callback):
    """optimizer.step calls per optimiser (post-step hooks on the real optimisers)."""

    def on_train_start(self, trainer, module):
        self.calls = [0] * len(trainer.optimizers)
        for i, opt in enumerate(trainer.optimizers):
            opt.register_step_post_hook(functools.partial(self._count, i))

    def _count(self, i, *_):
        self.calls[i] += 1


def test_lightning_run_steps_each_optimiser_once_per_iteration_and_freezes_the_expert():
    method = _urd(iterations=2)
    net = method.model
    expert = {k: v.clone() for k, v in net.expert.state_dict().items()}
    teacher = {k: v.clone() for k, v in net.teacher.named_parameters()}
    student = {k: v.clone() for k, v in net.student.named_parameters()}
    items = [{k: v[i] for k, v in _batch(n=2).items()} for i in range(2)]
    loader = DataLoader(items, batch_size=2, collate_fn=collate)  # 1 batch: 2 epochs
    count = _Count()
    trainer = pl.Trainer(
        **method.trainer_arguments(len(loader)),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[count],
    )
    trainer.fit(method, train_dataloaders=loader)
    assert count.calls == [2, 2] and trainer.global_step == 4 and trainer.current_epoch == 2
    for k, v in net.expert.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(v, expert[k]), f"expert tensor {k} changed"
    assert all(not p.requires_grad for p in net.expert.parameters())
    assert any(not torch.equal(p, teacher[k]) for k, p in net.teacher.named_parameters())
    changed = [k for k, p in net.student.named_parameters() if not torch.equal(p, student[k])]
    assert any(k.startswith("skips.") for k in changed) and any("guide" in k for k in changed)
    logged = set(trainer.logged_metrics)
    for name in ("teacher_pixel", "teacher_mask", "teacher_flat", "student_e_damaged", "loss"):
        assert f"train/{name}_step" in logged, sorted(logged)


def test_validation_loss_uses_normal_images_only():
    method = _urd().eval()
    loss = method.validation_loss({"image": torch.rand(2, 3, 32, 32)})
    assert loss.dim() == 0 and 0 < loss.item() < 12


# --- composition -------------------------------------------------------------------------------
def test_expert_pair_copies_the_expert_and_checks_taps():
    enc = TimmEncoder("resnet18", pretrained=False)
    pair = ExpertTeacher(enc)
    for (k, a), b in zip(pair.expert.state_dict().items(), pair.teacher.state_dict().values()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), k
    with pytest.raises(CompositionError, match="same taps"):
        ExpertTeacher(enc, TimmEncoder("resnet18", layers=(2, 3, 4), pretrained=False))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="method.teacher_cache_gib"):
        _urd(teacher_cache_gib=1.0)
    with pytest.raises(ValueError, match="method.scheduler"):
        _urd(scheduler={"name": "cosine", "T_max": 10})
    with pytest.raises(CompositionError, match="student=skip_decoder"):
        URD(
            TimmEncoder("resnet18", pretrained=False),
            functools.partial(OCBE),
            functools.partial(ReverseDecoder),
            optimizer=OPT,
            teacher_optimizer=TEACHER_OPT,
        )


def _compose(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        return compose("config", overrides=[*overrides, "method_name=urd", "run_name=test"])


TINY = [
    "method=urd",
    "teacher.expert.name=resnet18",
    "teacher.expert.pretrained=false",
    "image_size=32",
    "dataset=synthetic",
]


def test_method_config_follows_the_official_code():
    cfg = _compose("method=urd")
    assert cfg.method.iterations == 5000 and cfg.data.batch_size == 16 and cfg.image_size == 256
    assert cfg.method.optimizer.lr == 0.005 and list(cfg.method.optimizer.betas) == [0.5, 0.999]
    assert cfg.method.teacher_optimizer.lr == 1e-4
    assert cfg.teacher.expert.name == "wide_resnet50_2" and cfg.teacher.teacher is None
    assert cfg.student.gii is True and cfg.synthesis.name == "perlin"
    assert cfg.data.normalize == "imagenet"


@pytest.mark.parametrize(
    ("preset", "category", "iterations"),
    [
        ("urd_mvtec", "bottle", 5000),
        ("urd_mvtec", "cable", 10000),
        ("urd_mvtec", "transistor", 10000),
        ("urd_gii_ablation", "cable", 10000),
        ("urd_visa", "pcb1", 10000),
        ("urd_btad", "'02'", 5000),
    ],
)
def test_presets_set_the_official_iterations_per_category(preset, category, iterations):
    cfg = _compose(f"experiment={preset}", f"dataset.category={category}")
    assert cfg.method.iterations == iterations and cfg.method._target_.endswith("URD")


def test_checkpoint_rebuilds_without_downloads_and_scores_the_same():
    stored = OmegaConf.to_container(_compose(*TINY, "teacher.expert.pretrained=auto"), resolve=True)
    assert model_config(stored, stored).teacher.expert.pretrained is False
    method = build_method(_compose(*TINY, "student.gii=false")).eval()
    ckpt = {"state_dict": method.state_dict(), "adlab_config": method.run_config}
    again = method_from_checkpoint(ckpt).eval()
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(again.model(images).maps, method.model(images).maps)
    assert not again.model.student.gii
    parts = {k.split(".")[1] for k in method.state_dict()}
    assert parts == {"expert", "teacher", "fusion", "student"}


def test_plain_encoder_and_wrong_student_through_the_configs():
    method = build_method(_compose("method=urd", "teacher=resnet18", "teacher.pretrained=false",
                                   "image_size=32"))  # fmt: skip
    assert method.weights_sources() == {"expert": "random", "teacher": "random"}
    with pytest.raises(ConfigError, match="student=skip_decoder"):
        build_method(_compose(*TINY, "student=rd_decoder"))


@pytest.mark.e2e
def test_evaluate_entry_point_scores_a_trained_urd_checkpoint(tmp_path):
    """One Lightning iteration, its checkpoint, then `python -m adlab.evaluate ckpt=...`."""
    method = build_method(_compose(*TINY))
    items = [{k: v[i] for k, v in _batch(n=2).items()} for i in range(2)]
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(method, train_dataloaders=DataLoader(items, batch_size=2, collate_fn=collate))
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "eval"
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    args = [
        f"ckpt={ckpt}",
        "dataset=synthetic",
        f"dataset.root={tmp_path / 'data'}",
        "dataset.n_train=4",
        "dataset.n_test_normal=4",
        "dataset.n_test_anomalous=4",
        "logger=none",
        "eval.n_visuals=2",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "adlab.evaluate", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["method"]["_target_"] == "adlab.methods.urd.URD"
    assert results["config"]["teacher"]["expert"]["pretrained"] is False
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= results["metrics"][key] <= 1.0, results["metrics"]


@pytest.mark.e2e
def test_run_trains_urd_on_synthetic_anomalies_and_both_losses_decrease(tmp_path):
    """`python -m adlab.run method=urd`: synthesis=perlin feeds the damaged images, both
    optimisers step, both losses fall from the first epoch to the last, metrics are written."""
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "dataset=synthetic",
        "dataset.style=texture",
        "dataset.n_train=24",
        "dataset.n_test_normal=6",
        "dataset.n_test_anomalous=6",
        "data.batch_size=8",
        "method.iterations=12",  # 4 epochs of 3 batches
        "method.teacher_optimizer.lr=0.002",  # the official 1e-4 moves too little in 12 steps
        "logger=csv",
        "eval.n_visuals=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    adlab("adlab.run", *args, cwd=tmp_path)  # ADLAB_DATA=<cwd>/data, W&B offline
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    for name in ("teacher", "student"):
        epochs = [float(r[f"train/{name}_epoch"]) for r in rows if r.get(f"train/{name}_epoch")]
        assert len(epochs) == 4 and epochs[-1] < epochs[0], (name, epochs)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["timings"]["train_steps"] == 12  # iterations = batches, not optimiser steps
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= results["metrics"][key] <= 1.0
    assert (run_dir / "synthesis_examples.png").is_file()
