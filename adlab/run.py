"""Entry point: compose the config, then train, test and write results (adlab.pipeline).

python -m adlab.run method=rd4ad dataset=elpv
python -m adlab.run -m method=rd4ad dataset=synthetic seed=0,1
python -m adlab.run -m experiment=tune_pdd_loss          # Optuna search on the validation split
"""

from __future__ import annotations

import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from adlab.compose import ConfigError
from adlab.logs import job_log
from adlab.objective import objective_value
from adlab.paths import CONF_DIR
from adlab.pipeline import train_and_test

# conf/hydra/launcher/submitit_*.yaml replace the plugin's configs of the same name with every
# key listed; Hydra still matches them to the plugin's schema and says so on every launch.
warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema")


def tuning(hydra_cfg: DictConfig) -> bool:
    """Whether a hyper-parameter search (the Optuna sweeper) uses the returned value."""
    return "optuna" in str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="")).lower()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the objective (a validation metric) when `objective` is set, else image AUROC."""
    hydra_cfg = HydraConfig.get()
    objective = cfg.get("objective")
    with job_log():
        if tuning(hydra_cfg) and objective is None:
            raise ConfigError(
                "hydra/sweeper=optuna optimises a validation metric: set objective=val/loss "
                "(with dataset.val_fraction=0.1) or objective=val/image_auroc (a validation "
                "split with anomalies); the test set is never an objective."
            )
        results = train_and_test(
            cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
        )
    if objective is not None:
        return objective_value(results, objective)
    return results["metrics"].get("image_auroc")


if __name__ == "__main__":
    main()
