"""The method contract: typed batches, manual optimisation with an iteration budget, reference
sets that survive checkpoints, composition errors that name the groups, report grouping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch import Tensor, nn
from torch.utils.data import DataLoader

from adlab.compose import ConfigError, build_datamodule, build_method
from adlab.data.batch import collate
from adlab.methods.base import DistillationMethod
from adlab.models.networks.base import AnomalyNetwork
from adlab.preflight import check_batch_keys
from adlab.report import main as report_main

REPO = Path(__file__).resolve().parents[1]


def test_collate_keeps_every_field():
    items = [
        {
            "image": torch.full((3, 4, 4), float(i)),
            "label": i % 2,
            "path": f"{i}.png",
            "category": "c",
            "augmented": torch.zeros(3, 4, 4),
            "support": torch.ones(2, 3, 4, 4) * i,
            "weight": 0.5 * i,
            "mask": torch.zeros(1, 2 + i, 2),  # sizes differ: kept as a list
        }
        for i in range(3)
    ]
    batch = collate(items)
    assert batch["support"].shape == (3, 2, 3, 4, 4) and float(batch["support"][2].mean()) == 2
    assert batch["augmented"].shape == (3, 3, 4, 4)
    assert batch["label"].tolist() == [0, 1, 0] and batch["label"].dtype == torch.long
    assert batch["weight"].tolist() == [0.0, 0.5, 1.0] and batch["weight"].dtype == torch.float32
    assert batch["path"] == ["0.png", "1.png", "2.png"]
    assert isinstance(batch["mask"], list) and [m.shape[1] for m in batch["mask"]] == [2, 3, 4]
    with pytest.raises(ValueError, match="same fields"):
        collate([items[0], {k: v for k, v in items[1].items() if k != "support"}])


# --- a toy two-optimiser method ------------------------------------------------------------------
class ToyNetwork(AnomalyNetwork):
    """A 'teacher' and a 'student' 1x1 conv: the student reconstructs the teacher's features."""

    reference_names = ("reference",)

    def __init__(self) -> None:
        super().__init__({"sigma": 0.0})
        self.teacher = nn.Conv2d(3, 4, 1)
        self.student = nn.Conv2d(4, 4, 1)

    def feature_pairs(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        target = self.teacher(images)
        if self.reference is not None:
            target = target - self.reference
        return [(target, self.student(target))]

    references_needed = True

    def set_references(self, images: Tensor) -> None:
        self.register_reference("reference", self.teacher(images).mean(0, keepdim=True))


class TwoStepMethod(DistillationMethod):
    """Manual optimisation: a teacher step then a student step per batch, like URD."""

    optimizers_per_batch = 2

    def __init__(self, **common) -> None:
        super().__init__(ToyNetwork(), **common)
        self.automatic_optimization = False
        self.steps = {"teacher": 0, "student": 0}

    def configure_optimizers(self):
        return [
            self.make_optimizer({"lr": 0.01}, self.model.teacher.parameters()),
            self.make_optimizer(self.optimizer_cfg, self.model.student.parameters()),
        ]

    def training_step(self, batch: dict, batch_idx: int) -> None:
        teacher_opt, student_opt = self.optimizers()
        images = batch["image"]
        for name, opt, loss in (
            ("teacher", teacher_opt, lambda: self.model.teacher(images).pow(2).mean()),
            ("student", student_opt, lambda: self.model(images).maps.mean()),
        ):
            value = loss()
            opt.zero_grad()
            self.manual_backward(value)
            opt.step()
            self.steps[name] += 1
            self.log_losses({name: value}, images.shape[0])


def _loader(n_batches: int, batch_size: int = 2) -> DataLoader:
    items = [
        {"image": torch.rand(3, 8, 8), "label": 0, "path": f"{i}.png", "category": ""}
        for i in range(n_batches * batch_size)
    ]
    return DataLoader(items, batch_size=batch_size, collate_fn=collate)


def test_two_optimiser_method_trains_exactly_the_requested_iterations(tmp_path):
    method = TwoStepMethod(optimizer={"lr": 0.01}, iterations=7)
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    loader = _loader(n_batches=3)
    args = method.trainer_arguments(len(loader))
    assert args == {"max_steps": 14, "max_epochs": -1}
    trainer = pl.Trainer(
        **args,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(method, train_dataloaders=loader)
    # 7 batches (over 3 epochs of 3 batches), each optimiser stepped once per batch
    assert method.steps == {"teacher": 7, "student": 7}
    after = method.model.state_dict()
    for prefix in ("teacher.", "student."):
        changed = [
            k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])
        ]
        assert len(changed) == 2, prefix  # weight and bias of each conv


def test_references_survive_a_checkpoint(tmp_path):
    method = TwoStepMethod(optimizer={"lr": 0.01})
    images = torch.rand(2, 3, 8, 8)
    assert method.references_needed and not method.model.has_references()
    method.set_references(torch.rand(3, 3, 8, 8))
    want = method.model(images)
    torch.save(method.state_dict(), tmp_path / "m.pt")
    fresh = TwoStepMethod(optimizer={"lr": 0.01})
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"), strict=True)
    assert fresh.model.has_references()
    got = fresh.model(images)
    torch.testing.assert_close(got.maps, want.maps, rtol=0, atol=0)
    assert not torch.equal(got.maps, TwoStepMethod(optimizer={"lr": 0.01}).model(images).maps)


# --- composition through the configs ---------------------------------------------------------
def _compose(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        return compose("config", overrides=[*overrides], return_hydra_config=True)


def test_groups_that_do_not_compose_fail_at_build_time_naming_them():
    cfg = _compose(
        "method=pdd", "fusion=ocbe", "teacher.cnn.pretrained=false", "teacher.vmamba.weights=null"
    )
    with pytest.raises(ConfigError) as err:
        build_method(cfg)
    assert "fusion=ocbe" in str(err.value) and "teacher=vmamba_wrn50" in str(err.value)
    assert "OCBE" in str(err.value) and "4" in str(err.value)


def test_a_method_whose_data_lacks_a_batch_key_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("ADLAB_DATA", str(tmp_path))
    cfg = _compose("dataset=synthetic", "dataset.n_train=4", "dataset.n_test_normal=2",
                   "dataset.n_test_anomalous=2", "image_size=64")  # fmt: skip
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    method = TwoStepMethod(optimizer={"lr": 0.01})
    check_batch_keys(method, datamodule)  # image, label, path: provided
    method.required_batch_keys = ("image", "augmented")
    with pytest.raises(ConfigError, match=r"\['augmented'\].*synthesis=perlin"):
        check_batch_keys(method, datamodule)


# --- report grouping -------------------------------------------------------------------------
def _result(root: Path, name: str, seed: int, lr: float, auroc: float) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    overrides = [f"seed={seed}", f"method.optimizer.lr={lr}", "method=rd4ad", "dataset=headct"]
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    payload = {
        "method": "rd4ad",
        "metrics": {"image_auroc": auroc},
        "config": {"dataset": {"name": "headct"}, "teacher": {"name": "wrn50"}, "seed": seed},
    }
    (job / "results.json").write_text(json.dumps(payload))


def test_report_groups_by_every_override_but_the_seed(tmp_path, capsys):
    values = {(0, 0.01): 0.70, (1, 0.01): 0.80, (0, 0.001): 0.90, (1, 0.001): 0.94}
    for i, ((seed, lr), auroc) in enumerate(values.items()):
        _result(tmp_path, str(i), seed, lr, auroc)
    assert report_main([str(tmp_path), "--metrics", "image_auroc"]) == 0
    out = capsys.readouterr().out
    # one row per learning rate; mean and sample std over the two seeds only
    assert "| rd4ad (wrn50) [method.optimizer.lr=0.01] | 75.0 ± 7.1 (n=2) | 75.0 |" in out
    assert "| rd4ad (wrn50) [method.optimizer.lr=0.001] | 92.0 ± 2.8 (n=2) | 92.0 |" in out
