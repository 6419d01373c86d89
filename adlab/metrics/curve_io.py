"""Write a PRO curve as CSV and as a PNG plot (matplotlib when installed, else PIL drawing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def thin(fpr: np.ndarray, pro: np.ndarray, max_points: int | None) -> tuple[np.ndarray, ...]:
    """At most max_points evenly spaced points, first and last kept (None keeps all)."""
    if max_points is None or fpr.size <= max_points:
        return fpr, pro
    idx = np.unique(np.linspace(0, fpr.size - 1, max(max_points, 2)).round().astype(np.int64))
    return fpr[idx], pro[idx]


def write_csv(path: Path, fpr: np.ndarray, pro: np.ndarray) -> None:
    """Two columns fpr,pro with 17 significant digits (float64 round-trips exactly)."""
    data = np.column_stack([fpr, pro]) if fpr.size else np.zeros((0, 2))
    np.savetxt(path, data, fmt="%.17g", delimiter=",", header="fpr,pro", comments="")


def write_png(path: Path, fpr: np.ndarray, pro: np.ndarray, fpr_limit: float, title: str) -> None:
    """Plot PRO against FPR on [0, fpr_limit] x [0, 1]."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _write_png_pil(path, fpr, pro, fpr_limit, title)
        return
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot(fpr, pro, lw=1.5)
    ax.set(
        xlim=(0, fpr_limit), ylim=(0, 1), xlabel="FPR (normal pixels)", ylabel="PRO", title=title
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_png_pil(
    path: Path, fpr: np.ndarray, pro: np.ndarray, fpr_limit: float, title: str, size: int = 400
) -> None:
    from PIL import Image, ImageDraw

    margin = 40
    img = Image.new("RGB", (size + 2 * margin, size + 2 * margin), "white")
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = margin, margin, margin + size, margin + size
    for k in range(6):  # grid and tick labels every fifth of each axis
        gx, gy = x0 + k * size / 5, y1 - k * size / 5
        draw.line([(gx, y0), (gx, y1)], fill=(225, 225, 225))
        draw.line([(x0, gy), (x1, gy)], fill=(225, 225, 225))
        draw.text((gx - 10, y1 + 5), f"{k * fpr_limit / 5:.2f}", fill="black")
        draw.text((4, gy - 5), f"{k / 5:.1f}", fill="black")
    draw.rectangle([x0, y0, x1, y1], outline="black")
    draw.text((x0, 10), title, fill="black")
    draw.text((x1 - 120, y1 + 22), "FPR (normal pixels)", fill="black")
    if fpr.size:
        xs = x0 + np.clip(fpr / fpr_limit, 0, 1) * size
        ys = y1 - np.clip(pro, 0, 1) * size
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(31, 119, 180), width=2)
    img.save(path)


def save_curve(
    run_dir: str | Path,
    fpr: np.ndarray,
    pro: np.ndarray,
    fpr_limit: float,
    value: float,
    max_points: int | None = 100_000,
) -> tuple[Path, Path]:
    """Write run_dir/pro_curve.csv and run_dir/pro_curve.png; returns both paths."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = run_dir / "pro_curve.csv", run_dir / "pro_curve.png"
    write_csv(csv_path, *thin(fpr, pro, max_points))
    write_png(
        png_path, *thin(fpr, pro, 4000), fpr_limit, f"PRO curve, AUPRO@{fpr_limit} = {value:.4f}"
    )
    return csv_path, png_path
