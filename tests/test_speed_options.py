"""Speed options: torch.compile (method.compile) gives eager's losses and maps and keeps checkpoint
keys; bf16 autocast leaves maps and scores in float32; bf16 is refused where not offered."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_e2e_run import adlab

import adlab.methods.compile as compile_module
from adlab.compose import ConfigError, build_method
from adlab.methods.base import DistillationMethod
from adlab.methods.compile import CompileUnavailable, compile_parts
from adlab.methods.d24fad import D24FAD
from adlab.methods.pdd import PDD
from adlab.methods.rd4ad import RD4AD
from adlab.methods.urd import URD
from adlab.models.fusion.ocbe import OCBE
from adlab.models.students.rd_decoder import ReverseDecoder
from adlab.models.teachers.timm_encoder import TimmEncoder
from adlab.preflight import check_precision

REPO = Path(__file__).resolve().parents[1]


def _rd4ad(**kw) -> RD4AD:
    return RD4AD(
        teacher=TimmEncoder("resnet18", pretrained=False),
        fusion=functools.partial(OCBE),
        student=functools.partial(ReverseDecoder),
        optimizer={"lr": 0.005, "betas": (0.5, 0.999)},
        **kw,
    )


def test_compile_is_off_by_default_and_a_broken_toolchain_names_the_fix(monkeypatch):
    method = _rd4ad()
    method.setup("fit")
    assert method.compiled == [] and method.compile_network is False

    def broken(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(compile_module.torch, "compile", broken)
    with pytest.raises(CompileUnavailable, match=r"method.compile=true.*InvalidCxxCompiler"):
        compile_parts(method.model)
    with pytest.raises(CompileUnavailable, match=r"method.compile=false"):
        _rd4ad(compile=True).setup("fit")


@pytest.mark.e2e  # inductor compiles three graphs (~1-3 minutes on 2 CPU cores)
def test_compiled_losses_and_maps_match_eager_and_checkpoints_load_both_ways():
    torch.manual_seed(0)
    eager = _rd4ad()
    compiled = _rd4ad(compile=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.setup("fit")
    assert compiled.compiled == ["teacher", "fusion", "student"]
    images = torch.rand(4, 3, 64, 64)
    eager.train()
    compiled.train()
    loss_e = eager.training_loss({"image": images})["loss"]
    loss_c = compiled.training_loss({"image": images})["loss"]
    assert abs(loss_c.item() - loss_e.item()) < 1e-5, (loss_c.item(), loss_e.item())
    loss_e.backward()
    loss_c.backward()
    # Gradients: same direction and size. Elementwise they differ by up to ~1% of a tensor's
    # largest entry (kernel order through batch-statistics BatchNorm); eager channels-last vs
    # contiguous differs by up to 4% on this model, float32 vs float64 by 2e-5.
    for (name, pe), pc in zip(
        eager.model.student.named_parameters(), compiled.model.student.parameters()
    ):
        cos = torch.nn.functional.cosine_similarity(pc.grad.flatten(), pe.grad.flatten(), dim=0)
        assert cos.item() > 0.9999, name
        assert abs(pc.grad.norm().item() / pe.grad.norm().item() - 1) < 5e-3, name
    eager.eval()
    compiled.eval()
    maps_e, scores_e = eager.predict_maps(images)
    maps_c, scores_c = compiled.predict_maps(images)
    assert (maps_c - maps_e).abs().max().item() < 1e-4
    assert (scores_c - scores_e).abs().max().item() < 1e-4
    # the state dict keys are the eager ones: a compiled run's checkpoint loads without compile
    state = compiled.state_dict()
    assert list(state) == list(eager.state_dict())
    assert not any("_orig_mod" in k for k in state)
    fresh = _rd4ad()
    fresh.load_state_dict(state, strict=True)
    compiled.load_state_dict(eager.state_dict(), strict=True)  # and an eager one into compiled
    assert (fresh.eval().predict_maps(images)[0] - maps_c).abs().max().item() < 1e-4


def _urd() -> URD:
    overrides = ["method=urd", "teacher.expert.name=resnet18", "teacher.expert.pretrained=false",
                 "image_size=64", "method_name=urd", "run_name=test"]  # fmt: skip
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        return build_method(compose("config", overrides=overrides))


@pytest.mark.parametrize("build", [_rd4ad, _urd], ids=["rd4ad", "urd"])
def test_maps_and_scores_are_float32_under_bf16_autocast(build):
    # the methods that offer bf16 testing: bf16 features, float32 maps and scores
    method = build().eval()
    images = torch.rand(2, 3, 64, 64)
    maps32, _ = method.predict_maps(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps, scores = method.predict_maps(images)
        assert method.model.teacher(images)[0].dtype == torch.bfloat16  # autocast is on
    assert maps.dtype == torch.float32 and scores.dtype == torch.float32
    assert maps.shape == (2, 64, 64)
    # bf16 features, float32 maps: close to float32's, not bit-equal
    assert (maps - maps32).abs().max().item() < 0.05 * maps32.abs().max().item()


def test_bf16_is_offered_only_where_declared():
    def cfg(precision, **extra):
        return OmegaConf.create({"trainer": {"precision": precision}, **extra})

    rd4ad = _rd4ad()
    for precision in ("32-true", "32", "16-mixed"):
        check_precision(cfg(precision), rd4ad)  # not bf16: nothing to check
    # measured on CPU: bf16 training moved AUROC by more than 0.5 points, bf16 testing did not
    assert (RD4AD.bf16_training, RD4AD.bf16_testing) == (False, True)
    assert (PDD.bf16_training, PDD.bf16_testing) == (False, True)
    assert (URD.bf16_training, URD.bf16_testing) == (False, True)
    assert (D24FAD.bf16_training, D24FAD.bf16_testing) == (False, False)
    with pytest.raises(ConfigError, match=r"not offered for training RD4AD \(adlab.methods.rd4ad"):
        check_precision(cfg("bf16-mixed"), rd4ad)
    with pytest.raises(ConfigError, match=r"32-true \(the default\) \(bf16 testing of a float32"):
        check_precision(cfg("bf16-mixed"), rd4ad)
    check_precision(cfg("bf16-mixed"), rd4ad, training=False)  # adlab.evaluate
    check_precision(cfg("bf16-mixed", allow_bf16=True), rd4ad)  # measuring it
    with pytest.raises(ConfigError, match=r"trainer.precision=bf16-true: adlab measured only"):
        check_precision(cfg("bf16-true"), rd4ad, training=False)
    d24fad = object.__new__(D24FAD)  # offers neither; check_precision only reads the class
    with pytest.raises(ConfigError, match=r"testing D24FAD \(adlab.methods.d24fad.D24FAD.bf16_te"):
        check_precision(cfg("bf16-mixed"), d24fad, training=False)
    with pytest.raises(ConfigError, match=r"measured: CPU, 3 generated.*allow_bf16=true"):
        check_precision(cfg("bf16-mixed"), d24fad)

    class Unmeasured(RD4AD):  # a new method inherits neither until it is measured
        bf16_training = bf16_testing = False
        bf16_note = DistillationMethod.bf16_note

    with pytest.raises(ConfigError, match=r"measured: not measured.*allow_bf16=true"):
        check_precision(cfg("bf16-mixed"), object.__new__(Unmeasured))


@pytest.mark.e2e  # four tiny adlab.run jobs and the throughput loops: ~2-4 minutes on 2 cores
def test_gpu_bench_script_runs_on_cpu_quick(tmp_path):
    """experiments/bench/gpu.py --device cpu --quick: the script prepared for a GPU machine
    writes its JSON and table; the scan paths agree and maps stay float32 under bf16."""
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments/bench/gpu.py"), "--out", str(out)]
        + ["--device", "cpu", "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_bench.json").read_text())
    assert report["device_name"] and report["quick"] is True
    rows = {(r["method"], r["precision"]): r for r in report["throughput"]}
    assert set(rows) == {(m, p) for m in ("rd4ad", "pdd") for p in ("32-true", "bf16-mixed")}
    for r in rows.values():
        assert r["train_step_s"] > 0 and r["test_images_per_s"] > 0 and r["train_peak_mib"] > 0
        assert r["map_dtypes"] == {"maps": "torch.float32", "scores": "torch.float32"}
    scan = report["scan"]
    assert scan["equal_within_1e-3"] and scan["chunked_nograd_max_abs_diff"] < 1e-3
    assert [row["method"] for row in report["agreement"]] == ["rd4ad", "pdd"]
    for row in report["agreement"]:
        assert list(row["runs"]) == ["32-true", "bf16-mixed", "bf16-mixed test only"]
        for run in row["runs"].values():
            assert 0.0 <= run["image_auroc"] <= 1.0, run
        for key in ("training", "testing"):
            assert set(row[f"{key}_diff_points"]) == {"image_auroc", "pixel_auroc"}
            assert isinstance(row[f"bf16_{key}_agrees"], bool)
    table = (out / "gpu_bench.md").read_text()
    assert report["device_name"] in table and "| pdd (64 px, batch 4) | bf16-mixed |" in table


TINY_RUN = [
    "method=rd4ad",
    "dataset=synthetic",
    "teacher=resnet18",
    "teacher.pretrained=false",
    "image_size=64",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


@pytest.mark.e2e  # a compiled run (~1-2 minutes of inductor on 2 cores) and an eager evaluate
def test_compiled_run_checkpoint_evaluates_without_compile(tmp_path):
    run_dir, eval_dir = tmp_path / "run", tmp_path / "eval"
    adlab("adlab.run", *TINY_RUN, "method.compile=true", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert "torch.compile: teacher, fusion, student" in (run_dir / "run.log").read_text()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert state and not any("_orig_mod" in k for k in state)
    adlab(
        "adlab.evaluate",
        f"ckpt={ckpt}",
        "dataset=synthetic",
        "logger=csv",
        f"hydra.run.dir={eval_dir}",
        cwd=tmp_path,
    )
    assert "torch.compile" not in (eval_dir / "evaluate.log").read_text()  # the caller's choice
    trained = json.loads((run_dir / "results.json").read_text())["metrics"]
    evaluated = json.loads((eval_dir / "results.json").read_text())["metrics"]
    assert abs(trained["image_auroc"] - evaluated["image_auroc"]) < 1e-6
    assert abs(trained["pixel_auroc"] - evaluated["pixel_auroc"]) < 1e-4


@pytest.mark.e2e
def test_run_refuses_bf16_training_where_not_offered(tmp_path):
    proc = adlab(
        "adlab.run",
        *TINY_RUN,
        "trainer.precision=bf16-mixed",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert "trainer.precision=bf16-mixed is not offered for training RD4AD" in proc.stderr
    assert "adlab.methods.rd4ad.RD4AD.bf16_training is False" in proc.stderr
