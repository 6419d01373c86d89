"""Evaluate a trained checkpoint on a dataset, without training.

python -m adlab.evaluate ckpt=outputs/.../checkpoints/last.ckpt dataset=synthetic

The model-defining groups (adlab.compose.MODEL_KEYS) come from the checkpoint, the dataset,
sampler, eval and logger keys from the command line.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from adlab.logs import job_log
from adlab.paths import CONF_DIR
from adlab.pipeline import evaluate_checkpoint


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    with job_log():
        results = evaluate_checkpoint(
            cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
        )
    return results["metrics"].get("image_auroc")


if __name__ == "__main__":
    main()
