"""Read the records of an offline W&B run file (run-<id>.wandb) with wandb's own protobufs.

wandb >= 0.20 no longer ships a Python reader for its transaction log, so the tests parse the
LevelDB-style log format themselves: a 7-byte file header, then 32 KiB blocks of records, each with
a 7-byte header (crc32c, little-endian length, type: 1 full, 2 first, 3 middle, 4 last).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

FILE_HEADER = 7
BLOCK = 32768
RECORD_HEADER = 7


def records(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    out, pos, pending = [], FILE_HEADER, b""
    while pos + RECORD_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + RECORD_HEADER])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind == 1:
            pending = chunk
        elif kind == 2:
            pending = chunk
            continue
        elif kind == 3:
            pending += chunk
            continue
        else:
            pending += chunk
        record = pb.Record()
        record.ParseFromString(pending)
        out.append(record)
        pending = b""
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def logged_values(path: Path) -> dict[str, list]:
    """Every value logged to the run's history, by key, in order."""
    values: dict[str, list] = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                values.setdefault(_key(item), []).append(json.loads(item.value_json))
    return values


def run_config(path: Path) -> dict:
    """The run's config as logged (last value of each key)."""
    config = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "config":
            for item in r.config.update:
                config[_key(item)] = json.loads(item.value_json)
        elif r.WhichOneof("record_type") == "run":
            for item in r.run.config.update:
                config[_key(item)] = json.loads(item.value_json)
    return config


def summary(path: Path) -> dict:
    """The run's summary as last written (each key's latest value)."""
    values = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                values[_key(item)] = json.loads(item.value_json)
    return values


def run_record(path: Path) -> pb.RunRecord:
    """The run's own record: name, group, tags, job type."""
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")
