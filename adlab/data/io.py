"""Decode image and mask files of any format the benchmarks use into PIL images.

Every image comes out as 8-bit "L"/"RGB" (cheap to resize and cache) or, for high bit-depth data
(16-bit, 32-bit integer, float, DICOM), as data.high_bit_depth says:
- "minmax" (default): a float "F" image in [0, 1] scaled by the image's own min..max, so 12-bit CT
  stored in 16-bit PNGs is neither clipped nor crushed into the darkest 1/16 of the range;
- "clip": what the official codes' PIL `convert("RGB")` does, values saturated to 0..255 and
  fractions truncated, as an 8-bit "L" image (reproduces their input, detail above 255 is lost).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError, features

from adlab.data.records import DatasetError

# WebP only where this Pillow build decodes it (features.check), so no listed file is unreadable
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm") + (
    (".webp",) if features.check("webp") else ()
)
# Image formats adlab does not read; files with these extensions are reported, never read
OTHER_IMAGE_EXTENSIONS = frozenset(
    {".gif", ".webp", ".jp2", ".j2k", ".jpx", ".jxl", ".heic", ".heif", ".avif", ".svg", ".ppm",
     ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".psd", ".exr", ".hdr", ".nii", ".nrrd", ".mha",
     ".dds", ".pcx"}
)  # fmt: skip


def is_image_file(path: str | Path) -> bool:
    """True for the file types adlab reads (by extension, case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def looks_like_image(path: str | Path) -> bool:
    """True for a file adlab does not read that is probably an image all the same: an image
    format's extension, or image content (PNG, JPEG, DICOM, ...) behind another extension."""
    path = Path(path)
    if path.suffix.lower() in OTHER_IMAGE_EXTENSIONS:
        return True
    try:
        with path.open("rb") as handle:
            if handle.read(132)[128:132] == b"DICM":
                return True
        with Image.open(path):
            return True
    except Exception:  # any failure to identify means: not an image we recognise
        return False


HIGH_BIT_DEPTH = ("minmax", "clip")


def check_high_bit_depth(mode: str) -> str:
    if mode not in HIGH_BIT_DEPTH:
        raise ValueError(
            f"data.high_bit_depth={mode!r}: use 'minmax' (each image's min..max to 0..1) or "
            "'clip' (values above 255 saturate, as the official codes' PIL convert('RGB'))."
        )
    return mode


def _high_bit_depth(array: np.ndarray, mode: str) -> Image.Image:
    """A high bit-depth array as minmax ("F" in [0, 1]) or clip ("L", PIL's saturation)."""
    if mode == "clip":
        clipped = np.clip(np.asarray(array, dtype=np.float64), 0, 255)
        return Image.fromarray(clipped.astype(np.uint8))  # "L"; astype truncates, as PIL does
    return _scale_range(array)


def _scale_range(array: np.ndarray) -> Image.Image:
    """Map a high bit-depth array to a float image in [0, 1] by its own min..max."""
    data = array.astype(np.float32)
    low, high = float(data.min()), float(data.max())
    data = (data - low) / (high - low) if high > low else np.zeros_like(data)
    return Image.fromarray(data, mode="F")


def _read_dicom(path: Path, high_bit_depth: str = "minmax") -> Image.Image:
    try:
        import pydicom
    except ImportError as exc:
        raise DatasetError(
            f"{path}: DICOM files need pydicom; install the extra with `pip install adlab[dicom]`."
        ) from exc
    ds = pydicom.dcmread(str(path))
    data = ds.pixel_array.astype(np.float32)
    data = data * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    if data.ndim == 3 and data.shape[-1] == 3:
        return Image.fromarray(np.clip(data, 0, 255).astype(np.uint8), mode="RGB")
    if data.ndim != 2:
        data = data[data.shape[0] // 2]  # a multi-frame volume: its middle slice
    return _high_bit_depth(data, high_bit_depth)


def _normalise_mode(image: Image.Image, high_bit_depth: str = "minmax") -> Image.Image:
    """Convert any PIL mode to L, RGB or F (high bit-depth with minmax)."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_bit_depth(np.asarray(image), high_bit_depth)
    if mode == "P":
        return (
            image.convert("RGBA").convert("RGB")
            if "transparency" in image.info
            else (image.convert("RGB"))
        )
    if mode in ("RGBA", "LA", "PA"):
        rgb = "RGB" if mode == "RGBA" else "L"
        return image.convert(rgb)  # alpha dropped: benchmarks store opaque content there
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, ...


@contextmanager
def decoding(path: str | Path) -> Iterator[None]:
    """Turn any failure to open or decode `path` into a DatasetError that names the file."""
    try:
        yield
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: image file not found.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode this image ({exc}).") from exc


def read_image(path: str | Path, high_bit_depth: str = "minmax") -> Image.Image:
    """Decode one image to an L, RGB or F image; DatasetError naming the file if it cannot.
    high_bit_depth: "minmax" or "clip" for 16-bit, 32-bit and float images (module docstring)."""
    check_high_bit_depth(high_bit_depth)
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return _read_dicom(path, high_bit_depth)
    with decoding(path), Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return _high_bit_depth(np.array(image), high_bit_depth)
        return _normalise_mode(image, high_bit_depth)


def verify_image(path: str | Path) -> tuple[int, int]:
    """(width, height) after decoding every pixel once (nothing kept): a truncated or corrupt
    file fails here, where a header check passes it."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return read_image(path).size
    with decoding(path), Image.open(path) as image:
        image.load()
        return image.size


def header_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header, plus PIL's structural check (chunk CRCs for PNG)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return read_image(path).size
    with decoding(path), Image.open(path) as image:
        size = image.size
        image.verify()
    return size


def read_mask(path: str | Path) -> np.ndarray:
    """Decode a mask file to a (H, W) uint8 array of 0/1: any nonzero pixel is anomalous."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            # a palette mask's indices need not map 0 to black: compare the colours instead
            array = np.asarray(image.convert("RGB") if image.mode == "P" else image)
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: mask file not found.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode this mask ({exc}).") from exc
    if array.ndim == 3:
        array = array.any(axis=2)
    return (array != 0).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 0/1 mask resized to (width, height) by nearest neighbour (dataset.mask_resize=true)."""
    if mask.shape[::-1] == tuple(size):
        return mask
    return np.array(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
