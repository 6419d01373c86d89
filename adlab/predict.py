"""Anomaly maps and scores for new images from a trained checkpoint.

    python -m adlab.predict ckpt=<run>/checkpoints/last.ckpt input=<image|folder|glob> \
        output=<dir> [batch_size=16] [device=auto|cpu|cuda]

Writes, per readable image, `maps/<name>.npy` (float32 anomaly map at the model's input
resolution, H x W) and `overlays/<name>.png` (image | heat map, one colour scale for the whole
call), and `scores.csv` (path, score). Unreadable files are listed in `failed.csv` with the
reason and on stderr; the others are still processed. Exit code: 0 all written, 1 some input
files were unreadable, 2 bad arguments or checkpoint.
"""

from __future__ import annotations

import csv
import glob
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from adlab.callbacks.visualize import overlay_panel
from adlab.data.io import is_image_file
from adlab.data.records import DatasetError
from adlab.inference import load_model, preprocess

USAGE = __doc__
DEFAULTS = {"output": "predictions", "batch_size": "16", "device": "auto"}


def parse_args(argv: list[str]) -> dict[str, str]:
    """key=value arguments (the same style as adlab.run); unknown keys are an error."""
    args = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in {"ckpt", "input", *DEFAULTS}:
            raise ValueError(
                f"unknown argument {arg!r}; expected key=value with keys ckpt, "
                "input, output, batch_size, device"
            )
        args[key] = value
    for key in ("ckpt", "input"):
        if not args.get(key):
            raise ValueError(f"{key}=... is required")
    return args


def find_inputs(pattern: str) -> list[Path]:
    """An image file, every image file under a folder (recursively), or a glob's matches."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
    matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
    return [p for p in matches if p.is_file()]


def output_name(path: Path, base: Path | None) -> str:
    """A unique file stem: the path relative to the input folder, separators as '__'."""
    rel = path.relative_to(base) if base is not None else Path(path.name)
    return "__".join(rel.with_suffix("").parts)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def predict(args: dict[str, str]) -> int:
    network = load_model(args["ckpt"], resolve_device(args["device"]))
    device = next(network.parameters()).device
    inputs = find_inputs(args["input"])
    if not inputs:
        raise ValueError(f"input={args['input']}: no image files found there")
    base = Path(args["input"]).expanduser() if Path(args["input"]).is_dir() else None
    out = Path(args["output"]).expanduser()
    (out / "maps").mkdir(parents=True, exist_ok=True)
    batch_size = int(args["batch_size"])
    scores: list[tuple[str, float, str]] = []
    low, high = float("inf"), float("-inf")  # one colour scale for every overlay
    failed: list[tuple[str, str]] = []
    with tqdm(total=len(inputs), desc="predict", unit="img") as bar:
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            readable, images = [], []
            for path in chunk:
                try:
                    images.append(preprocess(network, [path])[0])
                    readable.append(path)
                except DatasetError as err:
                    failed.append((str(path), str(err)))
            if images:
                with torch.no_grad():
                    maps, values = network(torch.stack(images).to(device))
                for path, amap, value in zip(readable, maps.float().cpu(), values.tolist()):
                    name = output_name(path, base)
                    np.save(out / "maps" / f"{name}.npy", amap.numpy())
                    low, high = min(low, float(amap.min())), max(high, float(amap.max()))
                    scores.append((str(path), float(value), name))
            bar.update(len(chunk))
    write_overlays(network, scores, out, low, high)
    with (out / "scores.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "score"])
        writer.writerows((p, f"{s:.6f}") for p, s, _ in scores)
    if failed:
        with (out / "failed.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("path", "reason"), *failed])
        print(f"{len(failed)} unreadable file(s), listed in {out / 'failed.csv'}:", file=sys.stderr)
        for path, reason in failed:
            print(f"  {path}: {reason}", file=sys.stderr)
    print(f"wrote {len(scores)} maps and scores to {out}")
    return 1 if failed else 0


def write_overlays(network, scores: list[tuple[str, float, str]], out: Path, vmin, vmax) -> None:
    """image | heat map PNGs, one colour scale (vmin..vmax) over every map of this call."""
    if not scores:
        return
    (out / "overlays").mkdir(exist_ok=True)
    for path, _, name in scores:
        amap = torch.from_numpy(np.load(out / "maps" / f"{name}.npy"))
        visual = {"image": preprocess(network, [path])[0], "map": amap}
        panel = overlay_panel(visual, network.transform.normalize, vmin, vmax)
        Image.fromarray(panel).save(out / "overlays" / f"{name}.png")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        return predict(parse_args(argv))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
