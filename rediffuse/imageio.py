"""Reading and writing images with the conventions the rest of the project relies on.

- ``read_image(path)`` -> ``uint8`` array, ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB).
- ``read_image_float(path)`` -> ``float32`` array in ``[0, 1]``, same shapes, keeping the full
  precision of 16-bit files.
- ``write_image(path, arr)`` writes atomically (temporary file in the target folder, then
  ``os.replace``), so an interrupted run never leaves a half-written image behind.

EXIF orientation is always applied, so pixels come back the way a viewer shows the photo; an alpha
channel is dropped with a warning (fusion works on opaque images); files that are not images raise a
one-line ``ValueError`` naming the file.
"""
from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "read_image", "read_image_float", "write_image", "to_uint8"]

#: Extensions treated as images when a folder is scanned (lower case, with the dot).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# EXIF orientation tag value -> operation on a numpy array [H, W, ...]; the same transforms
# PIL.ImageOps.exif_transpose performs, needed where pixels bypass PIL (16-bit colour TIFF).
_ORIENT_NP = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _open(path: Path) -> Image.Image:
    """Open and decode ``path`` (caller closes it); one-line errors naming the file."""
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"expected an image file, got a folder: {path}")
    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read {path} as an image ({type(e).__name__}: {e})") from None
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        # Truncated or corrupt data: one line with the file name, no traceback chain to dig through.
        im.close()
        raise ValueError(f"cannot read {path} as an image ({type(e).__name__}: {e})") from None
    return im


def _drop_alpha(arr: np.ndarray, path: Path) -> np.ndarray:
    # stacklevel 4: user -> read_image[_float] -> _decode_float -> here.
    warnings.warn(f"{path}: alpha channel dropped (image treated as opaque)", stacklevel=4)
    return arr[..., :-1] if arr.shape[-1] in (2, 4) else arr


def _tiff_bits(im: Image.Image) -> int:
    """Bits per sample of a TIFF as stored in its header (8 if unknown)."""
    try:
        bps = im.tag_v2.get(258)  # BitsPerSample
    except AttributeError:
        return 8
    if bps is None:
        return 8
    return int(max(bps) if isinstance(bps, (tuple, list)) else bps)


def _decode_float(im: Image.Image, path: Path) -> np.ndarray:
    """Decode to float32 in [0, 1], [H, W] or [H, W, 3]; the one place that knows PIL modes."""
    orientation = im.getexif().get(0x0112, 1)

    # Pillow decodes 16-bit colour TIFF to 8 bits; tifffile (a scikit-image dependency) keeps
    # all 16, and the orientation is then applied by hand.
    if im.format == "TIFF" and im.mode in ("RGB", "RGBA") and _tiff_bits(im) > 8:
        try:
            import tifffile

            raw = np.asarray(tifffile.imread(path))
        except Exception:  # fall back to Pillow's 8-bit decoding
            raw = None
        if raw is not None and raw.ndim == 3 and raw.shape[-1] in (3, 4):
            if raw.shape[-1] == 4:
                raw = _drop_alpha(raw, path)
            op = _ORIENT_NP.get(orientation)
            if op is not None:
                raw = op(raw)
            scale = float(np.iinfo(raw.dtype).max) if raw.dtype.kind in "ui" else 1.0
            return np.ascontiguousarray(raw, dtype=np.float32) / np.float32(scale)

    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode == "P":
        # Palette images may carry transparency; expand first so alpha is seen and dropped.
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"

    if mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    if mode == "LA":
        return _drop_alpha(np.asarray(im, dtype=np.float32), path)[..., 0] / 255.0
    if mode == "RGB":
        return np.asarray(im, dtype=np.float32) / 255.0
    if mode in ("RGBA", "RGBa"):
        return _drop_alpha(np.asarray(im.convert("RGBA"), dtype=np.float32), path) / 255.0
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode == "I":
        # 32-bit integer images are in practice 16-bit PNG/TIFF data widened by Pillow.
        a = np.asarray(im, dtype=np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise ValueError(f"cannot read {path}: 32-bit integer image outside the 16-bit range")
        return (a / 65535.0).astype(np.float32)
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(f"cannot read {path}: float image with values outside [0, 1]")
        return a
    # CMYK, YCbCr, LAB, HSV, ...: let Pillow convert to RGB.
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def read_image_float(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 in [0, 1]: ``[H, W]`` grey or ``[H, W, 3]`` RGB.

    16-bit grey PNG/TIFF and 16-bit colour TIFF keep their full precision. 16-bit colour PNG is
    decoded by Pillow to 8 bits per channel (a Pillow limitation), so it comes back at 8-bit precision.
    """
    path = Path(path)
    with _open(path) as im:
        return _decode_float(im, path)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8: ``[H, W]`` grey or ``[H, W, 3]`` RGB.

    EXIF orientation is applied; 16-bit data is scaled to 8 bits (rounded, v*255/65535); an alpha
    channel is dropped with a ``UserWarning``. Raises ``FileNotFoundError`` for a missing path and a
    one-line ``ValueError`` naming the file for anything that is not a readable image.
    """
    path = Path(path)
    with _open(path) as im:
        # The common case (8-bit grey/RGB, e.g. every dataset JPEG) stays exact in integers.
        if im.mode in ("L", "RGB") and not (im.format == "TIFF" and _tiff_bits(im) > 8):
            return np.array(ImageOps.exif_transpose(im), dtype=np.uint8)
        return to_uint8(_decode_float(im, path))


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """float in [0, 1] (any shape) -> uint8, rounded to nearest and clipped."""
    return np.clip(np.rint(np.asarray(arr, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _format_for(path: Path) -> str:
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(
            f"cannot write {path}: unknown image extension {ext!r} "
            "(use e.g. .png, .jpg, .tif, .bmp, .webp)"
        )
    return fmt


def write_image(path: str | os.PathLike, arr: np.ndarray, **save_kwargs: Any) -> Path:
    """Write ``arr`` to ``path`` atomically; the format follows the extension.

    ``arr``: uint8 ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]``; bool (written as 0/255);
    or uint16 ``[H, W]`` (16-bit grey, for PNG/TIFF). Float arrays are refused because their range
    (0-1 or 0-255) is ambiguous: convert with ``to_uint8`` first. JPEG defaults to quality 95.
    Missing parent folders are created. Returns the path written.
    """
    path = Path(path)
    fmt = _format_for(path)
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype == np.uint16:
        if a.ndim != 2:
            raise ValueError(f"cannot write {path}: 16-bit output is supported for grey [H, W] only")
        im = Image.fromarray(np.ascontiguousarray(a))
    elif a.dtype == np.uint8:
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
            raise ValueError(f"cannot write {path}: expected [H, W], [H, W, 3] or [H, W, 4], got {a.shape}")
        im = Image.fromarray(np.ascontiguousarray(a))
    else:
        raise TypeError(
            f"cannot write {path}: array dtype {a.dtype} (expected uint8, uint16 or bool; "
            "convert floats in [0, 1] with rediffuse.imageio.to_uint8)"
        )
    if fmt == "JPEG":
        if im.mode == "RGBA":
            raise ValueError(f"cannot write {path}: JPEG has no alpha channel")
        save_kwargs.setdefault("quality", 95)

    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot write {path}: cannot create folder {parent} ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: folder {parent} is not writable")

    # Temporary file in the same folder (same file system, so os.replace is atomic). Created with
    # os.open(..., 0o666) so the final file gets the usual umask-derived permissions.
    tmp = parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            im.save(f, format=fmt, **save_kwargs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
