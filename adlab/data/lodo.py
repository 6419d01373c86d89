"""protocol=lodo (leave one dataset out): train on episodes drawn from the training normals of
every member except the target, test on the target against its k-shot support sets.

The target is an ordinary AnomalyDataModule (dataset=, with its command-line overrides); the
other members are read from their conf/dataset files. Only their training normals are decoded,
and nothing of the target enters the training episodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, RandomSampler

from adlab.data.batch import BASE_KEYS, collate
from adlab.data.datamodule import AnomalyDataModule, resolve_root
from adlab.data.dataset import ImageCache, default_workers
from adlab.data.episodes import EpisodeDataset, Episodes
from adlab.data.fingerprint import fingerprint
from adlab.data.readers import get_reader
from adlab.data.records import DatasetError, Sample
from adlab.data.resumable import ResumableBatchSampler, ResumableLoader
from adlab.data.support import SupportSet
from adlab.data.synthesis import EpochSampler
from adlab.data.validate import raise_for_bad_files

PROTOCOLS = ("single", "lodo")


def with_protocol(
    target: AnomalyDataModule, protocol: Mapping[str, Any] | None, dataset_dir: Path
) -> AnomalyDataModule | LodoDataModule:
    """The datamodule of a protocol config ({name: single} keeps the target alone)."""
    name = (protocol or {}).get("name", "single")
    if name not in PROTOCOLS:
        raise DatasetError(f"protocol={name!r} is unknown; use one of {', '.join(PROTOCOLS)}.")
    if name == "single":
        return target
    return LodoDataModule(target, protocol, dataset_dir)


def member_config(entry: str | Mapping[str, Any], dataset_dir: Path) -> dict[str, Any]:
    """A member given by name (conf/dataset/<name>.yaml) or as a full dataset config."""
    if isinstance(entry, Mapping):
        if not entry.get("name"):
            raise DatasetError(f"protocol.members: the dataset config {dict(entry)} has no name.")
        return dict(entry)
    path = dataset_dir / f"{entry}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in dataset_dir.glob("*.yaml")))
        raise DatasetError(
            f"protocol.members: no dataset config {entry!r} ({path}); use names of: {known}."
        )
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


def expected_layout(config: Mapping[str, Any]) -> str:
    keys = ("train_normal", "test_normal", "test_anomalous")
    folders = [f"<root>/{config[k]}" for k in keys if config.get(k)]
    return ", ".join(folders) if folders else f"the {config.get('reader')} layout (README.md)"


class LodoDataModule:
    """The target's test set and support sets; training episodes from the other members."""

    def __init__(
        self, target: AnomalyDataModule, protocol: Mapping[str, Any], dataset_dir: Path
    ) -> None:
        self.target = target
        self.resample = str(protocol.get("resample", "never"))
        self.drop_last = bool(protocol.get("drop_last", True))
        roots = {k: v for k, v in (protocol.get("roots") or {}).items() if v}
        configs = [member_config(m, dataset_dir) for m in protocol.get("members") or []]
        names = [c["name"] for c in configs]
        target_name = target.config.get("name")
        if target_name not in names:
            raise DatasetError(
                f"dataset={target_name} is not among protocol.members={names}: the target must "
                "be one of the members (it is left out of training); add it to protocol.members "
                "or pick one of them as dataset=."
            )
        if target_name in roots:  # one place for all five folders, whichever is the target
            target.config["root"] = roots[target_name]
        self.configs = {
            c["name"]: {**c, **({"root": roots[c["name"]]} if c["name"] in roots else {})}
            for c in configs
            if c["name"] != target_name
        }
        self.sources: dict[str, list[Sample]] = {}
        self.members: dict[str, dict[str, Any]] = {}
        self.episodes: Episodes | None = None
        self._cache: ImageCache | None = None

    # --- reading ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._cache is not None:
            return
        target = self.target
        if target.sampler.get("name") != "kshot":
            raise DatasetError(
                "protocol=lodo pairs each training image with sampler.shots supports of its own "
                "source and tests against k-shot support sets: use sampler=kshot."
            )
        read = {name: self._read_member(name, config) for name, config in self.configs.items()}
        target.setup()
        total = sum(len(samples) for _, samples, _ in read.values())
        cache = ImageCache(target.transform, keep_pixels=target._use_memory_cache(total))
        for name, (root, samples, listed) in read.items():
            config = self.configs[name]
            workers = int(config.get("decode_workers") or default_workers())
            skip = str(config.get("on_bad_image", "error")) == "skip"
            failed = cache.load(samples, workers)
            raise_for_bad_files(failed, skip=skip)
            skipped = set(failed)
            self.sources[name] = [s for s in samples if s.path not in skipped]
            self.members[name] = {
                "role": "train",
                "root": str(root),
                "fingerprint": fingerprint(listed, str(root)),
                "train_normal": len(self.sources[name]),
                "skipped": sorted(skipped),
            }
        self.members[str(target.config["name"])] = {
            "role": "target",
            "root": target.root,
            "fingerprint": target.fingerprint,
            "support_pool": target.pool_size,
            "test": target.summary()["test"],
            "skipped": list(target.skipped),
        }
        shots = int(target.sampler.get("shots", 0))
        self.episodes = Episodes(self.sources, shots, target.seed, self.resample)
        if self.drop_last and len(self.episodes) < target.batch_size:
            raise DatasetError(
                f"{len(self.episodes)} training episodes < data.batch_size={target.batch_size} "
                "with protocol.drop_last=true: no batch would be trained; lower the batch size."
            )
        self._cache = cache

    def _read_member(self, name: str, config: dict) -> tuple[Path, list[Sample], list[Sample]]:
        """(root, training normals, every listed file) of a member; errors name the member."""
        fix = f"set protocol.roots.{name}=<folder> (or ADLAB_DATA=<folder holding {name}/>)"
        given = config.get("root")
        if given and config.get("reader") != "synthetic" and not Path(str(given)).is_dir():
            raise DatasetError(
                f"protocol member {name}: folder {given} does not exist; expected there: "
                f"{expected_layout(config)}. Put the data there or {fix}."
            )
        try:
            root = resolve_root(config)
            listed = get_reader(config)(root, config)
        except DatasetError as err:
            raise DatasetError(f"protocol member {name}: {err} (or {fix})") from err
        train = [s for s in listed if s.split == "train" and s.label == 0]
        if not train:
            raise DatasetError(f"protocol member {name}: no training normals at {root}; {fix}.")
        return root, train, listed

    # --- loaders -------------------------------------------------------------------------------
    def train_dataloader(self, epoch: int = 0) -> DataLoader:
        """Shuffled episodes (the epoch tags them for resample=epoch), resumable exactly."""
        if self.episodes is None or self._cache is None:
            raise RuntimeError("call LodoDataModule.setup() before asking for loaders")
        target = self.target
        dataset = EpisodeDataset(self.episodes, self._cache)
        generator = torch.Generator().manual_seed(target.seed)
        order = EpochSampler(RandomSampler(dataset, generator=generator), epoch)
        return ResumableLoader(
            dataset,
            batch_sampler=ResumableBatchSampler(order, target.batch_size, self.drop_last),
            generator=generator,
            num_workers=target.num_workers,
            collate_fn=collate,
            persistent_workers=target.num_workers > 0,
        )

    def val_dataloader(self) -> None:
        return None

    def test_dataloader(self) -> DataLoader:
        return self.target.test_dataloader()

    def batch_keys(self, split: str) -> set[str]:
        return {*BASE_KEYS, "support"} if split == "train" else self.target.batch_keys(split)

    def reference_sets(self) -> list[SupportSet]:
        return self.target.reference_sets()

    def reference_images(self, support: SupportSet | None = None):
        return self.target.reference_images(support)

    # --- provenance ----------------------------------------------------------------------------
    @property
    def sampler(self) -> dict[str, Any]:
        return self.target.sampler

    @property
    def root(self) -> str:
        return self.target.root

    @property
    def fingerprint(self) -> str:
        return self.target.fingerprint

    @property
    def skipped(self) -> list[str]:
        return [*self.target.skipped, *(p for m in self.members.values() for p in m["skipped"])]

    def summary(self) -> dict[str, Any]:
        """The target's counts; `train` counts the episodes; every member's root, fingerprint
        and counts under `members`."""
        out = self.target.summary()
        out["train"] = {"normal": len(self.episodes) if self.episodes else 0}
        out["members"] = self.members
        return out
