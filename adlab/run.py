"""Entry point: compose the config, then train, test and write results (adlab.pipeline).

python -m adlab.run method=rd4ad dataset=elpv
python -m adlab.run -m method=rd4ad dataset=synthetic seed=0,1
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from adlab.logs import job_log
from adlab.paths import CONF_DIR
from adlab.pipeline import train_and_test


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    with job_log():
        results = train_and_test(
            cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
        )
    return results["metrics"].get("image_auroc")


if __name__ == "__main__":
    main()
