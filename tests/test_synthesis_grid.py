"""The synthesis grid (PNG of image | damaged image | mask, written on the first training batch
of a real Lightning fit and handed to every logger with log_image), and the epoch that Lightning
hands the synthesis sampler."""

from __future__ import annotations

import logging

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger

from adlab.callbacks.synthesis_grid import (
    GRID_NAME,
    SynthesisGrid,
    grid_callbacks,
    write_synthesis_grid,
)
from adlab.data import AnomalyDataModule
from adlab.data.synthesis import checkpoint_epoch
from adlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tests.data_trees import mvtec_tree, write_png


def fake_batch(count: int, size: int = 16) -> dict:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(count, 3, size, size, generator=gen)
    mask = (torch.rand(count, 1, size, size, generator=gen) > 0.7).float()
    return {"image": image, "augmented": image * (1 - mask), "synthetic_mask": mask}


def test_grid_png_has_one_row_per_sample_and_three_panels(tmp_path):
    batch = fake_batch(3)
    path = write_synthesis_grid(batch, tmp_path / "sub" / GRID_NAME, normalize="none", rows=8)
    with Image.open(path) as png:
        assert png.size == (3 * 16, 3 * 16) and png.mode == "RGB"
        pixels = torch.from_numpy(np.asarray(png).copy())
    mask_panel = pixels[:16, 32:48, 0]
    assert torch.equal(mask_panel > 0, batch["synthetic_mask"][0, 0] > 0.5)
    expected = (batch["image"][0].permute(1, 2, 0) * 255).round().to(torch.uint8)
    assert torch.equal(pixels[:16, :16], expected)
    path = write_synthesis_grid(fake_batch(12), tmp_path / "big.png", normalize="none", rows=8)
    with Image.open(path) as png:
        assert png.size == (48, 8 * 16)


def test_grid_undoes_imagenet_normalisation(tmp_path):
    batch = fake_batch(1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    normalised = {**batch, "image": (batch["image"] - mean) / std,
                  "augmented": (batch["augmented"] - mean) / std}  # fmt: skip
    a = write_synthesis_grid(batch, tmp_path / "a.png", normalize="none")
    b = write_synthesis_grid(normalised, tmp_path / "b.png", normalize="imagenet")
    with Image.open(a) as x, Image.open(b) as y:
        diff = (torch.tensor(list(x.getdata())) - torch.tensor(list(y.getdata()))).abs()
    assert int(diff.max()) <= 1


class ImageRecorder(Logger):
    """A Lightning logger that keeps what log_image receives."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, list, list]] = []

    name = "recorder"
    version = "0"

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_image(self, key, images, caption=None, **kwargs) -> None:
        self.images.append((key, images, caption))


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.seen: dict[tuple[int, str], torch.Tensor] = {}  # (epoch, path) -> augmented

    def training_step(self, batch, batch_idx):
        for path, damaged in zip(batch["path"], batch["augmented"]):
            self.seen[self.current_epoch, path] = damaged.clone()
        return (batch["augmented"].mean() - batch["image"].mean() + self.weight).pow(2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tree(root):
    mvtec_tree(root)
    for i in range(3):
        write_png(root / "bottle/train/good" / f"x{i}.png", mode="RGB", value=50 * i)
    return root


def fit(dm: AnomalyDataModule, root, epochs: int, ckpt: str | None = None, epoch: int = 0):
    """A real fit (2 workers); returns what the model saw per (epoch, path) and the dataset."""
    model = Tiny()
    trainer = pl.Trainer(
        max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0)],
        accelerator="cpu", default_root_dir=str(root),
    )  # fmt: skip
    loader = dm.train_dataloader(epoch=epoch)
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ckpt)
    return model.seen, loader.dataset


def test_lightning_epochs_and_resume_draw_the_anomalies_of_their_epoch(tmp_path, caplog):
    dm = AnomalyDataModule(
        {"name": "mvtec", "root": str(tree(tmp_path / "data")), "category": "bottle"},
        image_size=24, batch_size=4, num_workers=2, seed=3, synthesis={"name": "perlin"},
    )  # fmt: skip
    dm.setup()
    seen, dataset = fit(dm, tmp_path / "run", 2)
    index = {s.path: i for i, s in enumerate(dataset.samples)}
    assert len(seen) == 2 * len(index)
    last = str(tmp_path / "run" / "last.ckpt")
    assert checkpoint_epoch(last) == 2
    resumed, _ = fit(dm, tmp_path / "run", 4, ckpt=last, epoch=checkpoint_epoch(last))
    assert sorted({e for e, _ in resumed}) == [2, 3]
    for (epoch, path), damaged in {**seen, **resumed}.items():
        assert torch.equal(damaged, dataset[index[path], epoch]["augmented"])
    assert any(not torch.equal(seen[0, p], resumed[2, p]) for p in index)
    assert "first training pass" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="adlab"):
        fit(dm, tmp_path / "run", 5, ckpt=str(tmp_path / "run" / "last.ckpt"))  # no start epoch
    assert "drew epoch 0's anomalies but the trainer is at epoch 4" in caplog.text


def test_callback_writes_the_grid_at_the_start_of_training_and_logs_it(tmp_path):
    dm = AnomalyDataModule(
        {"name": "mvtec", "root": str(tree(tmp_path / "data")), "category": "bottle"},
        image_size=24, batch_size=4, synthesis={"name": "perlin"},
    )  # fmt: skip
    dm.setup()
    callbacks = grid_callbacks(dm.batch_keys("train"), tmp_path / "run", "imagenet")
    assert len(callbacks) == 1 and isinstance(callbacks[0], SynthesisGrid)
    assert grid_callbacks({"image"}, tmp_path / "run", "imagenet") == []
    recorder = ImageRecorder()
    trainer = pl.Trainer(
        max_steps=3, logger=recorder, callbacks=callbacks, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        default_root_dir=str(tmp_path / "run"),
    )  # fmt: skip
    trainer.fit(Tiny(), train_dataloaders=dm.train_dataloader())
    grid = tmp_path / "run" / GRID_NAME
    with Image.open(grid) as png:
        assert png.size == (3 * 24, 4 * 24)
    assert len(recorder.images) == 1  # once, on the first batch only
    key, images, caption = recorder.images[0]
    assert key == "train/synthesis" and images == [str(grid)]
    assert "image | damaged | mask" in caption[0]
