"""The training / evaluation loop every distillation method shares.

A method subclass builds its network (a plain nn.Module that maps images to anomaly maps) and
says how to compute its losses and what to optimise; this class does optimisation, the teacher
cache, metric accumulation and keeps a few test samples for visualisation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor

from adlab.methods.cache_policy import caches_for
from adlab.methods.compile import compile_parts
from adlab.metrics import AnomalyEvaluator
from adlab.metrics.code_evaluator import CodeMetrics
from adlab.metrics.code_metrics import check_code_metrics
from adlab.models.networks.base import AnomalyNetwork

log = logging.getLogger("adlab")


def make_adam(groups: list[dict], *, fused: bool = True, **kwargs) -> torch.optim.Adam:
    """Adam with the fused kernel when the parameters allow it (5x faster steps on CPU for
    RD4AD's 84M parameters); the same update rule as the default for-loop implementation."""
    if fused:
        try:
            return torch.optim.Adam(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.Adam(groups, **kwargs)


def select_samples(batch: dict, keep: Tensor) -> dict:
    """The samples of a batch where `keep` is true (tensors indexed, lists filtered)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.shape[:1] == keep.shape:
            out[key] = value[keep]
        elif isinstance(value, list) and len(value) == len(keep):
            out[key] = [v for v, k in zip(value, keep.tolist()) if k]
        else:
            out[key] = value
    return out


def category_mean(by_category: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Per metric, the mean over categories (NaN when any category's value is undefined)."""
    names = dict.fromkeys(k for values in by_category.values() for k in values)
    return {
        k: float(sum(v.get(k, float("nan")) for v in by_category.values()) / len(by_category))
        for k in names
    }


class Diverged(RuntimeError):
    """Training produced non-finite losses; the message names the step, the terms and the
    learning rates, and `info` is what results.json records."""

    def __init__(self, step: int, epoch: int, losses: dict, learning_rates: list) -> None:
        self.info = {
            "step": step,
            "epoch": epoch,
            "losses": losses,
            "learning_rates": learning_rates,
        }
        terms = ", ".join(f"{k}={v}" for k, v in losses.items())
        super().__init__(
            f"training diverged at step {step} (epoch {epoch}): non-finite loss ({terms}) with "
            f"learning rate(s) {learning_rates}. Lower method.optimizer.lr, check the data, or "
            "tolerate a few such steps with method.max_nonfinite_steps=<n>."
        )


_CPU_GROUPS: dict = {}


def metric_group() -> Any:
    """The process group the evaluators gather their (CPU) states over: the default one, or a
    gloo group beside NCCL, which moves only GPU tensors. None outside torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_backend() == "gloo":
        return None
    if "gloo" not in _CPU_GROUPS:  # created once, collectively, by every rank
        _CPU_GROUPS["gloo"] = dist.new_group(backend="gloo")
    return _CPU_GROUPS["gloo"]


DEFAULT_EVAL = {
    "resolution": "gt",
    "fpr_limit": 0.3,
    "pixel_metrics": True,
    "n_visuals": 8,
    "code_metrics": (),
}


class DistillationMethod(pl.LightningModule):
    """Training glue around a method's network (`self.model`, a plain AnomalyNetwork).

    A method implements `training_loss(batch)` and `parameter_groups()` (one optimiser, automatic
    optimisation), or sets `automatic_optimization = False`, owns `training_step` and builds its
    optimisers with `make_optimizer` (then `optimizers_per_batch` says how many step per batch).
    Shared options (optimizer, scheduler, scoring, evaluation, channels_last, compile,
    teacher_cache_gib, iterations) are handled here once; a method's own signature lists only
    its own options. trainer.precision=bf16-mixed is offered only where measured bf16 metrics
    agree with float32 (within 0.5 AUROC points): for training and testing (`bf16_training`,
    adlab.run) or for testing a float32-trained model (`bf16_testing`, adlab.evaluate);
    `bf16_note` says what was measured.
    """

    required_batch_keys: tuple[str, ...] = ("image", "label", "path")
    optimizers_per_batch: int = 1
    bf16_training: bool = False
    bf16_testing: bool = False
    bf16_note: str = "not measured against float32 yet"

    def __init__(
        self,
        model: AnomalyNetwork,
        *,
        optimizer: Mapping,
        scheduler: Mapping | None = None,
        scoring: Mapping | None = None,
        evaluation: Mapping | None = None,
        channels_last: bool = False,
        compile: bool = False,
        teacher_cache_gib: float | str | None = None,
        iterations: int | None = None,
        max_nonfinite_steps: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        model.scoring.update(dict(scoring or {}))
        self.channels_last = channels_last
        self.compile_network = bool(compile)  # compiled in setup (adlab.methods.compile)
        self.compiled: list[str] = []
        self.auto_cache, self.teacher_cache = caches_for(teacher_cache_gib)
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler) if scheduler else None
        self.iterations = int(iterations) if iterations else None
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.nonfinite_steps = 0
        self.eval_cfg = {**DEFAULT_EVAL, **dict(evaluation or {})}
        self.eval_cfg["code_metrics"] = check_code_metrics(self.eval_cfg["code_metrics"])
        self.run_config: dict | None = None  # set by the entry point, stored in checkpoints
        self.test_results: dict[str, float] = {}
        self.test_results_by_category: dict[str, dict[str, float]] = {}
        self.visuals: list[dict[str, Any]] = []
        self.worst: list[dict[str, Any]] = []  # highest normals, lowest anomalies (error grid)
        self.evaluator: AnomalyEvaluator | None = None
        self.code_metrics: CodeMetrics | None = None  # eval.code_metrics, beside the evaluator
        self._val_evaluator: AnomalyEvaluator | None = None
        self.reference_images: Tensor | None = None  # set by the pipeline before testing
        self.test_prefix = "test"  # test/<support set> while testing one of several sets

    # --- what a method defines -------------------------------------------------------------
    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        """The loss terms of one training batch; "loss" is the one optimised."""
        raise NotImplementedError

    def parameter_groups(self) -> list[dict]:
        """What the single optimiser of automatic optimisation updates."""
        raise NotImplementedError

    def validation_loss(self, batch: dict) -> Tensor:
        """The selection criterion on a normal-only validation batch (default: the training
        loss, which for a two-step method may not be the right one to select on)."""
        return self.training_loss(batch)["loss"]

    @property
    def input_divisor(self) -> int:
        return self.model.input_divisor

    @property
    def references_needed(self) -> bool:
        """Whether test images are scored against reference images (few-shot supports)."""
        return self.model.references_needed

    def set_references(self, images: Tensor) -> None:
        """Called once before testing with the reference images; kept in the checkpoint."""
        self.model.set_references(images)

    def weights_sources(self) -> dict[str, str]:
        return self.model.weights_sources()

    def trainer_arguments(self, n_train_batches: int) -> dict[str, Any]:
        """Trainer arguments the method decides. With `iterations`, training stops after that
        many batches: Lightning counts every optimiser step in global_step, so a method with
        two optimisers needs twice the steps."""
        if not self.iterations:
            return {}
        return {"max_steps": self.iterations * self.optimizers_per_batch, "max_epochs": -1}

    # --- memory format: channels-last convolutions are ~15% faster on CPU (oneDNN) -------------
    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_network and not self.compiled:
            self.compiled = compile_parts(self.model)
            log.info("torch.compile: %s (compiled at their first call)", ", ".join(self.compiled))

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if self.channels_last:
            for key, value in batch.items():
                if isinstance(value, Tensor) and value.dim() == 4 and value.is_floating_point():
                    batch[key] = value.contiguous(memory_format=torch.channels_last)
        return batch

    # --- frozen teachers -------------------------------------------------------------------
    @torch.no_grad()
    def teacher_features(self, images: Tensor, keys: list[str] | None = None) -> Any:
        """`self.model.teacher(images)`; with `keys` (image paths) and a teacher cache, kept
        features are reused. Training and the validation loss pass keys; scoring never does."""
        teacher = self.model.teacher
        if self.teacher_cache is None and self.auto_cache is not None and keys is not None:
            output, self.teacher_cache = self.auto_cache.decide(teacher, images, keys)
            self.auto_cache = None
            return output
        if self.teacher_cache is None or keys is None:
            return teacher(images)
        return self.teacher_cache(teacher, images, keys)

    # --- optimisation ------------------------------------------------------------------------
    @staticmethod
    def make_optimizer(cfg: Mapping, params: Any) -> torch.optim.Adam:
        """Adam from an optimizer config ({lr, betas, weight_decay, fused})."""
        return make_adam(
            params if isinstance(params, list) else list(params),
            lr=cfg["lr"],
            betas=tuple(cfg.get("betas", (0.9, 0.999))),
            weight_decay=cfg.get("weight_decay", 0.0),
            fused=cfg.get("fused", True),
        )

    def configure_optimizers(self):
        opt = self.make_optimizer(self.optimizer_cfg, self.parameter_groups())
        if not self.scheduler_cfg:
            return opt
        sched = self.scheduler_cfg
        if sched.get("name") != "cosine":
            raise ValueError(
                f"method.scheduler.name must be 'cosine' or null, got {sched.get('name')!r}"
            )
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=sched["T_max"], eta_min=sched.get("eta_min", 0.0)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}

    def log_losses(self, parts: Mapping[str, Tensor], batch_size: int, prefix: str = "train"):
        """Log each loss term per step and per epoch as `<prefix>/<name>`. Returns False (and
        logs nothing) when a term is not finite and `max_nonfinite_steps` tolerates it, so the
        caller skips the update; past the tolerance it raises Diverged."""
        if prefix == "train" and not self.losses_finite(parts):
            return False
        for name, value in parts.items():
            self.log(
                f"{prefix}/{name}",
                value.detach(),
                on_step=True,
                on_epoch=True,
                batch_size=batch_size,
                prog_bar=name == "loss",
                sync_dist=True,  # DDP: the mean over ranks (no-op on one process)
            )
        return True

    def losses_finite(self, parts: Mapping[str, Tensor]) -> bool:
        """Whether every loss term is finite; stop training (Diverged) after more than
        `max_nonfinite_steps` steps that were not."""
        if all(bool(torch.isfinite(v.detach()).all()) for v in parts.values()):
            return True
        self.nonfinite_steps += 1
        if self.nonfinite_steps <= self.max_nonfinite_steps:
            log.warning(
                "non-finite loss at step %d skipped (%d of %d tolerated)",
                self.global_step,
                self.nonfinite_steps,
                self.max_nonfinite_steps,
            )
            return False
        trainer = self._trainer
        lrs = [g["lr"] for opt in (trainer.optimizers if trainer else []) for g in opt.param_groups]
        raise Diverged(
            step=int(self.global_step),
            epoch=int(self.current_epoch),
            losses={k: float(v.detach().float().mean()) for k, v in parts.items()},
            learning_rates=lrs,
        )

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        parts = self.training_loss(batch)
        if not self.log_losses(parts, batch["image"].shape[0]):
            return None  # a tolerated non-finite step: no update
        return parts["loss"]

    def on_train_epoch_end(self) -> None:
        cache = self.teacher_cache
        rate = cache.take_hit_rate() if cache is not None else None
        if rate is not None:
            self.log("teacher_cache/hit_rate", float(rate))
            self.log("teacher_cache/gib", cache.used_bytes / 2**30)

    # --- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_maps(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Anomaly maps (B, H, W) at the input resolution and image scores (B,)."""
        maps, scores = self.model(images)
        return maps, scores

    def _new_evaluator(self, pixel_metrics: bool | None = None) -> AnomalyEvaluator:
        return AnomalyEvaluator(
            eval_resolution=self.eval_cfg["resolution"],
            fpr_limit=self.eval_cfg["fpr_limit"],
            pixel_metrics=self.eval_cfg["pixel_metrics"]
            if pixel_metrics is None
            else pixel_metrics,
            process_group=metric_group(),
        )

    def _update(self, evaluator: AnomalyEvaluator, batch: dict) -> tuple[Tensor, Tensor]:
        maps, scores = self.predict_maps(batch["image"])
        maps, scores = maps.float().cpu(), scores.float().cpu()
        evaluator.update(
            maps, scores, batch["label"].cpu(), batch.get("mask"), batch.get("category")
        )
        return maps, scores

    # --- validation (model selection on a validation split, never on test) -------------------
    def on_validation_epoch_start(self) -> None:
        self._val_evaluator = self._new_evaluator(pixel_metrics=False)
        self._val_labels: set[int] = set()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Validation AUROC when the split has both classes; the distillation loss on its normal
        images always (the selection criterion of a normal-only split from val_fraction)."""
        self._update(self._val_evaluator, batch)
        labels = batch["label"]
        self._val_labels.update(labels.tolist())
        normal = labels == 0
        if normal.any():
            loss = self.validation_loss(select_samples(batch, normal))
            self.log("val/loss", loss, on_epoch=True, batch_size=int(normal.sum()), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self._val_labels == {0, 1}:
            value = self._val_evaluator.compute()["image_auroc"]
            self.log("val/image_auroc", torch.tensor(value, dtype=torch.float32))

    # --- test ----------------------------------------------------------------------------------
    def on_test_start(self) -> None:
        if self.references_needed and self.reference_images is not None:
            self.set_references(self.reference_images.to(self.device))

    def on_test_epoch_start(self) -> None:
        self.evaluator = self._new_evaluator()
        names = self.eval_cfg["code_metrics"]
        self.code_metrics = CodeMetrics(names, process_group=metric_group()) if names else None
        self.visuals = []
        self.worst = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        maps, scores = self._update(self.evaluator, batch)
        if self.code_metrics is not None:  # the same maps; `index` restores the order under DDP
            self.code_metrics.update(
                maps, scores, batch["label"].cpu(), batch.get("mask"), batch.get("index")
            )
        self._keep_visuals(batch, maps, scores)

    def on_test_epoch_end(self) -> None:
        """Pooled metrics as test/<metric>; a multi-class test set adds test/<category>/<metric>
        and test/category_mean/<metric> (the mean over classes that multi-class tables report)."""
        self.test_results = {k: float(v) for k, v in self.evaluator.compute().items()}
        if self.code_metrics is not None:  # code_rd4ad/..., code_pdd/...: the official variants
            self.test_results.update({k: float(v) for k, v in self.code_metrics.compute().items()})
        prefix = self.test_prefix
        logged = {f"{prefix}/{k}": v for k, v in self.test_results.items()}
        self.test_results_by_category = {}
        if len(self.evaluator.categories) > 1:
            by_cat = self.evaluator.compute_by_category()
            by_cat["category_mean"] = category_mean(by_cat)
            self.test_results_by_category = by_cat
            for cat, values in by_cat.items():
                logged.update({f"{prefix}/{cat}/{k}": float(v) for k, v in values.items()})
        self.log_dict(logged, sync_dist=True)  # equal on every rank (synced evaluators)

    def _keep_visuals(self, batch: dict, maps: Tensor, scores: Tensor) -> None:
        """Keep up to n_visuals/2 normal and n_visuals/2 anomalous test images for the sample
        figures, and the n_visuals/2 highest-scoring normals and lowest-scoring anomalies (the
        candidates for the worst false positives / negatives, known once the threshold is)."""
        per_label = self.eval_cfg["n_visuals"] // 2
        masks = batch.get("mask")
        for i, (label, score) in enumerate(zip(batch["label"].tolist(), scores.tolist())):
            show = sum(v["label"] == label for v in self.visuals) < per_label
            if not (show or worst_admits(self.worst, score, label, per_label)):
                continue  # no image copy for the many samples that no figure shows
            sample = {
                "image": batch["image"][i].detach().float().cpu(),
                "map": maps[i],
                "score": float(score),
                "label": int(label),
                "mask": None if masks is None else masks[i].cpu(),
                "path": batch["path"][i],
            }
            if show:
                self.visuals.append(sample)
            self.worst = keep_worst(self.worst, sample, per_label)

    # --- checkpoints carry the resolved config so adlab.evaluate can rebuild the method --------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["adlab_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = with_model_prefix(checkpoint["state_dict"])


def worst_admits(kept: list[dict], score: float, label: int, per_label: int) -> bool:
    """Whether a sample would enter the worst list of its label (see keep_worst)."""
    same = [v["score"] for v in kept if v["label"] == label]
    if per_label <= 0 or len(same) < per_label:
        return per_label > 0
    return score < max(same) if label else score > min(same)


def keep_worst(kept: list[dict], sample: dict, per_label: int) -> list[dict]:
    """Add a sample to the per-label worst lists: normals by highest, anomalies by lowest score."""
    same = [v for v in kept if v["label"] == sample["label"]] + [sample]
    same.sort(key=lambda v: -v["score"] if not sample["label"] else v["score"])
    return [v for v in kept if v["label"] != sample["label"]] + same[:per_label]


def with_model_prefix(state: dict) -> dict:
    """Checkpoints written before the network moved under `model.` (teacher.* -> model.teacher.*)
    load unchanged."""
    if any(k.startswith("model.") for k in state):
        return state
    return {f"model.{k}": v for k, v in state.items()}
