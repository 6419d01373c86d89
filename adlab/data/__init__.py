"""Data package: benchmark readers, the datamodule, samplers and the synthetic benchmark."""

from adlab.data.datamodule import AnomalyDataModule
from adlab.data.records import DatasetError, Sample

__all__ = ["AnomalyDataModule", "DatasetError", "Sample"]
