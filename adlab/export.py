"""Export a trained network to ONNX or TorchScript for deployment without adlab.

    python -m adlab.export ckpt=<run>/checkpoints/last.ckpt format=onnx|torchscript \
        [output=<file>] [batch_size=1]

The exported graph maps a batch of normalised images (B, 3, S, S) to anomaly maps (B, S, S) and
image scores (B,), with a dynamic batch dimension. The preprocessing it expects (image size,
crop, resampling, normalisation) is written beside it as <output>.json and, for ONNX, into the
model's metadata. RD4AD, URD and D24FAD export both ways; PDD is refused (README, "Using a
trained model").
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from adlab.inference import load_model

USAGE = __doc__
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


def export(ckpt: str, fmt: str, output: str | None = None, batch_size: int = 1) -> Path:
    """Write the network of `ckpt` in `fmt`; returns the file written."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: use one of {', '.join(FORMATS)}")
    network = load_model(ckpt)
    if network.not_exportable:
        raise ValueError(f"{type(network).__name__} is not exported: {network.not_exportable}.")
    size = network.transform.output_size
    example = torch.zeros(batch_size, 3, size, size)
    path = Path(output) if output else Path(ckpt).with_suffix(FORMATS[fmt])
    path.parent.mkdir(parents=True, exist_ok=True)
    preprocessing = {**asdict(network.transform), "input": "normalised RGB, NCHW float32"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        if fmt == "onnx":
            _to_onnx(network, example, path, preprocessing)
        else:
            torch.jit.trace(network, (example,), check_trace=False).save(str(path))
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(preprocessing, indent=2))
    return path


def _to_onnx(network, example: torch.Tensor, path: Path, preprocessing: dict) -> None:
    # The TorchScript-based exporter: the dynamo exporter needs minutes and GiBs for the same
    # graph on CPU. Batch is dynamic; the image size is fixed by the training run.
    torch.onnx.export(
        network,
        (example,),
        str(path),
        input_names=["images"],
        output_names=["anomaly_maps", "scores"],
        dynamic_axes={n: {0: "batch"} for n in ("images", "anomaly_maps", "scores")},
        opset_version=17,
        dynamo=False,
    )
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "adlab_preprocessing", json.dumps(preprocessing)
    onnx.save(model, str(path))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0 if argv else 2
    args = dict(a.partition("=")[::2] for a in argv)
    unknown = set(args) - {"ckpt", "format", "output", "batch_size"}
    if unknown or "ckpt" not in args:
        print(f"error: expected ckpt=... format=onnx|torchscript, got {argv}", file=sys.stderr)
        return 2
    try:
        path = export(
            args["ckpt"],
            args.get("format", "onnx"),
            args.get("output"),
            int(args.get("batch_size", 1)),
        )
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
