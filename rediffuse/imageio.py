"""Reading and writing images with the conventions the rest of the project relies on.

- ``read_image(path)`` -> ``uint8`` array, ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB).
- ``read_image_float(path)`` -> ``float32`` array in ``[0, 1]``, same shapes, keeping the full
  precision of 16-bit files.
- ``read_image_native(path)`` -> the file's own precision: ``uint8`` (8-bit files), ``uint16``
  (16-bit PNG/TIFF, grey or colour) or ``float32`` in ``[0, 1]`` (floating-point TIFF).
- ``write_image(path, arr)`` encodes in memory and writes through ``atomic.write_bytes`` (temporary
  file in the target folder, every byte counted, then ``os.replace``), so an interrupted run or a
  full disk never leaves a half-written image behind.
  ``uint16`` arrays are written at 16 bits to PNG and TIFF, and at 8 bits (with a warning) to
  formats that hold no more (JPEG, WebP, BMP, ...).
- ``stack_frames(path)`` -> the frames a z-stack or folder stands for: one :class:`TiffPage` per
  page (z-slice) of a multi-page TIFF (ImageJ/Fiji, Micro-Manager, OME-TIFF), each decoded alone by
  its ``read()`` when needed, or a folder's image files in natural order.

Pillow decodes 16-bit colour PNG and TIFF to 8 bits per channel, so those two go through
``imagecodecs`` and ``tifffile`` (C codecs by the same author; tifffile ships with scikit-image).

EXIF orientation is always applied, so pixels come back the way a viewer shows the photo; an alpha
channel is dropped with a warning (fusion works on opaque images); files that are not images raise a
one-line ``ValueError`` naming the file.
"""
from __future__ import annotations

import io
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, IO

import imagecodecs
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import write_bytes

__all__ = ["IMAGE_EXTENSIONS", "SIXTEEN_BIT_FORMATS", "read_image", "read_image_float", "read_image_native",
           "write_image", "to_uint8", "TiffPage", "stack_frames", "image_size"]

#: Formats ``write_image`` writes at 16 bits per channel; every other format gets 8 bits.
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

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
    """Open ``path`` and read its header (caller closes it; pixels are decoded by ``_load``)."""
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"expected an image file, got a folder: {path}")
    try:
        return Image.open(path)
    except Image.DecompressionBombError as e:  # an Exception of its own: it would surface as a traceback
        raise ValueError(f"cannot read {path}: {e.args[0].split(', could be')[0].lower()} (Pillow's guard against "
                         "decompression bombs); fuse a smaller copy, or raise the limit with max_pixels=N") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read {path} as an image ({type(e).__name__}: {e})") from None


def image_size(src: str | os.PathLike | TiffPage) -> tuple[int, int]:
    """``(width, height)`` of an image file, or of one z-stack page, from its header alone: no pixel
    is decoded, so an image too large for the memory is refused before it fills it. One-line
    errors as :func:`read_image`."""
    if isinstance(src, TiffPage):
        import tifffile  # optional import: ships with scikit-image

        try:
            with tifffile.TiffFile(src.path) as tif:
                pages = tif.pages if src.series is None else tif.series[src.series].pages
                key = pages[src.pages[0]].keyframe
                return int(key.imagewidth), int(key.imagelength)
        except Exception as e:  # noqa: BLE001 - tifffile errors alike mean an unreadable page to the user
            raise ValueError(f"cannot read {src} ({type(e).__name__}: {e})") from None
    with warnings.catch_warnings():  # the size is what the caller checks: Pillow's warning would only repeat it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _open(Path(src)) as im:
            return im.size


def _load(im: Image.Image, path: Path) -> None:
    """Decode the pixels of an opened image; one-line errors naming the file."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        # Truncated or corrupt data: one line with the file name, no traceback chain to dig through.
        raise ValueError(f"cannot read {path} as an image ({type(e).__name__}: {e})") from None


def _drop_alpha(arr: np.ndarray, path: Path) -> np.ndarray:
    # stacklevel 5: user -> read_image* -> _read -> _decode -> here.
    warnings.warn(f"{path}: alpha channel dropped (image treated as opaque)", stacklevel=5)
    if arr.shape[-1] == 2:  # grey + alpha
        return arr[..., 0]
    return arr[..., :-1] if arr.shape[-1] == 4 else arr


def _png_sixteen_bit_colour(path: Path) -> bool:
    """Whether ``path`` is a 16-bit PNG with colour or alpha (the ones Pillow cuts to 8 bits).

    Read from the IHDR chunk, which the PNG standard puts first: bit depth at byte 24, colour
    type at byte 25 (0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGB + alpha)."""
    with open(path, "rb") as f:
        head = f.read(26)
    return (len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR"
            and head[24] == 16 and head[25] in (2, 4, 6))


def _check_float(a: np.ndarray, path: Path) -> np.ndarray:
    """A floating-point image must hold finite values in [0, 1]; say which rule it breaks."""
    if not np.isfinite(a).all():
        raise ValueError(f"cannot read {path}: float image holds NaN or infinite values")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError(f"cannot read {path}: float image with values outside [0, 1] "
                         f"(from {float(a.min()):g} to {float(a.max()):g})")
    return np.ascontiguousarray(a, dtype=np.float32)


def _native(raw: np.ndarray, path: Path) -> np.ndarray:
    """An array decoded by tifffile/imagecodecs at its own precision: uint8, uint16 or float32."""
    if raw.dtype.kind == "f":
        return _check_float(raw, path)
    if raw.dtype.kind in "ui" and raw.dtype.itemsize <= 2 and raw.min(initial=0) >= 0:
        return np.ascontiguousarray(raw, dtype=np.uint8 if raw.dtype.itemsize == 1 else np.uint16)
    raise ValueError(f"cannot read {path}: {raw.dtype} pixels (expected 8 or 16 bits per channel, or float)")


def _tiff_bits(im: Image.Image) -> int:
    """Bits per sample of a TIFF as stored in its header (8 if unknown)."""
    try:
        bps = im.tag_v2.get(258)  # BitsPerSample
    except AttributeError:
        return 8
    if bps is None:
        return 8
    return int(max(bps) if isinstance(bps, (tuple, list)) else bps)


def _decode(im: Image.Image, path: Path) -> np.ndarray:
    """Decode at the file's own precision: ``uint8``, ``uint16`` or ``float32`` in [0, 1];
    ``[H, W]`` or ``[H, W, 3]``. The one place that knows PIL modes."""
    orientation = im.getexif().get(0x0112, 1)

    raw = None
    if im.format == "PNG" and _png_sixteen_bit_colour(path):
        try:
            raw = imagecodecs.png_decode(path.read_bytes())
        except Exception as e:  # noqa: BLE001 - a codec error means an unreadable file to the user
            raise ValueError(f"cannot read {path} as an image ({type(e).__name__}: {e})") from None
    elif im.format == "TIFF" and im.mode in ("RGB", "RGBA") and _tiff_bits(im) > 8:
        # optional import: tifffile ships with scikit-image but is not rediffuse's own dependency
        try:
            import tifffile

            raw = np.asarray(tifffile.imread(path))
        except Exception as e:  # noqa: BLE001 - fall back to Pillow, saying what is lost
            warnings.warn(f"{path}: read at 8 bits per channel; its {_tiff_bits(im)}-bit colour could not be "
                          f"decoded ({type(e).__name__})", stacklevel=4)
            raw = None
    if raw is not None and raw.ndim in (2, 3):
        if raw.ndim == 3 and raw.shape[-1] in (2, 4):
            raw = _drop_alpha(raw, path)
        op = _ORIENT_NP.get(orientation)
        if op is not None:
            raw = op(raw)
        return _native(raw, path)

    _load(im, path)
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
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode == "LA":
        return _drop_alpha(np.asarray(im, dtype=np.uint8), path)
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode in ("RGBA", "RGBa"):
        return _drop_alpha(np.asarray(im.convert("RGBA"), dtype=np.uint8), path)
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        # 32-bit integer images are in practice 16-bit PNG/TIFF data widened by Pillow.
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"cannot read {path}: 32-bit integer image outside the 16-bit range")
        return a.astype(np.uint16)
    if mode == "F":
        return _check_float(np.asarray(im, dtype=np.float32), path)
    # CMYK, YCbCr, LAB, HSV, ...: let Pillow convert to RGB.
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _to_float(a: np.ndarray) -> np.ndarray:
    """A ``read_image_native`` array as float32 in [0, 1]."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    if a.dtype == np.uint16:
        return a.astype(np.float32) / np.float32(65535.0)
    return a


def _read(path: Path) -> np.ndarray:
    with _open(path) as im:
        try:
            return _decode(im, path)
        except (OSError, SyntaxError, EOFError) as e:
            # Pillow decodes lazily (even reading EXIF may hit a truncated file): one line naming it
            raise ValueError(f"cannot read {path} as an image ({type(e).__name__}: {e})") from None


def read_image_native(path: str | os.PathLike) -> np.ndarray:
    """Read an image at the precision it was stored with: ``[H, W]`` grey or ``[H, W, 3]`` RGB.

    ``uint8`` for 8-bit (and 1-bit, palette) files, ``uint16`` for 16-bit PNG and TIFF (grey or
    colour), ``float32`` in [0, 1] for floating-point TIFF (NaN, infinite or out-of-range values
    are refused). EXIF orientation applied, alpha dropped with a warning, one-line errors as
    :func:`read_image`.
    """
    return _read(Path(path))


def read_image_float(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 in [0, 1]: ``[H, W]`` grey or ``[H, W, 3]`` RGB.

    16-bit files (PNG and TIFF, grey and colour) keep their full precision.
    """
    return _to_float(_read(Path(path)))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8: ``[H, W]`` grey or ``[H, W, 3]`` RGB.

    EXIF orientation is applied; 16-bit data is scaled to 8 bits (rounded, v*255/65535); an alpha
    channel is dropped with a ``UserWarning``. Raises ``FileNotFoundError`` for a missing path and a
    one-line ``ValueError`` naming the file for anything that is not a readable image.
    """
    a = _read(Path(path))
    return a if a.dtype == np.uint8 else to_uint8(_to_float(a))


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


def _encoder(path: Path, fmt: str, a: np.ndarray, save_kwargs: dict) -> Callable[[IO[bytes]], None]:
    """A function writing ``a`` (uint8, or uint16 for PNG/TIFF) to a binary file in ``fmt``."""
    if a.dtype == np.uint16 and a.ndim == 3:
        # Pillow has no 16-bit colour mode: PNG through imagecodecs, TIFF through tifffile.
        if fmt == "PNG":
            return lambda f: f.write(imagecodecs.png_encode(np.ascontiguousarray(a)))
        import tifffile  # optional import: ships with scikit-image

        return lambda f: tifffile.imwrite(f, np.ascontiguousarray(a), photometric="rgb")
    im = Image.fromarray(np.ascontiguousarray(a))
    if fmt == "JPEG":
        if im.mode == "RGBA":
            raise ValueError(f"cannot write {path}: JPEG has no alpha channel")
        save_kwargs.setdefault("quality", 95)
    return lambda f: im.save(f, format=fmt, **save_kwargs)


def write_image(path: str | os.PathLike, arr: np.ndarray, **save_kwargs: Any) -> Path:
    """Write ``arr`` to ``path`` atomically; the format follows the extension.

    ``arr``: uint8 ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]``; bool (written as 0/255);
    or uint16 ``[H, W]`` / ``[H, W, 3]``, written at 16 bits to PNG and TIFF and rounded to 8 bits,
    with a ``UserWarning``, for other formats (JPEG holds 8 bits per channel). Float arrays are
    refused because their range (0-1 or 0-255) is ambiguous: convert with ``to_uint8`` first. JPEG
    defaults to quality 95; ``save_kwargs`` go to Pillow (not used for 16-bit colour). Missing
    parent folders are created. A failed write (a full disk, say) raises a one-line ``OSError``
    naming the file and leaves no file behind: an existing ``path`` keeps its old content.
    Returns the path written.
    """
    path = Path(path)
    fmt = _format_for(path)
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype == np.uint16:
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
            raise ValueError(f"cannot write {path}: 16-bit images must be [H, W] or [H, W, 3], got {a.shape}")
        if fmt not in SIXTEEN_BIT_FORMATS:
            warnings.warn(f"{path}: {fmt} holds 8 bits per channel, so the 16-bit image was written at 8 bits "
                          "(use .png or .tif to keep all 16)", stacklevel=2)
            a = to_uint8(a / 65535.0)
    elif a.dtype == np.uint8:
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
            raise ValueError(f"cannot write {path}: expected [H, W], [H, W, 3] or [H, W, 4], got {a.shape}")
    else:
        raise TypeError(
            f"cannot write {path}: array dtype {a.dtype} (expected uint8, uint16 or bool; "
            "convert floats in [0, 1] with rediffuse.imageio.to_uint8)"
        )
    buf = io.BytesIO()
    _encoder(path, fmt, a, dict(save_kwargs))(buf)
    # encoded in memory, then handed to the one atomic path that writes and counts every byte:
    # Pillow's own file writer ignores short writes, which cut an 8-bit TIFF short on a full disk
    return write_bytes(path, buf.getbuffer())


# --------------------------------------------------------------------------------------------------
# Stacks: multi-page TIFF z-stacks and folders of frames
# --------------------------------------------------------------------------------------------------

_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF, both byte orders

# tifffile series kinds read page by page (bare multi-page TIFFs: their pages are the frames, and pages
# of different sizes must be reported, not split into series). Every other kind (ImageJ/Fiji, OME,
# Micro-Manager, Zeiss LSM, ...) is read through its series, whose axes say which pages form one
# z-slice: one page, or one per channel.
_PLAIN_KINDS = ("generic", "uniform", "shaped")

_MINISWHITE = 0  # TIFF PhotometricInterpretation: 0 is white (Pillow inverts these, so do we)
_AXIS_NAMES = {"T": "time points", "Z": "z-slices", "C": "channels", "P": "positions", "R": "tiles", "I": "images",
               "Q": "planes", "A": "angles", "L": "lambdas", "H": "phases", "E": "lambdas", "V": "views"}


@dataclass(frozen=True)
class TiffPage:
    """Frame ``index`` (from 0) of the ``count`` frames of a z-stack kept in the TIFF file ``path``.

    A frame *source*, not pixels: :meth:`read` decodes this one frame when asked, so a 100-page stack
    is never decoded at once. ``pages``: the TIFF pages that hold it (one, or the three channel pages
    R, G, B of a 3-channel hyperstack), indices into ``tifffile.TiffFile.pages`` (``series`` None) or
    into the pages of ``TiffFile.series[series]``. ``str()`` names it in messages:
    ``"zstack.tif page 3"`` (counted from 1, as Fiji counts slices)."""

    path: Path
    index: int
    count: int
    pages: tuple[int, ...]
    series: int | None = None

    def __str__(self) -> str:
        return f"{self.path} page {self.index + 1}"

    def read(self) -> np.ndarray:
        """The frame at its own precision, as :func:`read_image_native` gives a file: ``uint8``,
        ``uint16`` or ``float32`` in [0, 1]; ``[H, W]`` grey or ``[H, W, 3]`` RGB. A blank page (every
        pixel one value) is a one-line ``ValueError``: it has no focus to give, only patches."""
        import tifffile  # optional import: ships with scikit-image

        try:
            with tifffile.TiffFile(self.path) as tif:
                pages = tif.pages if self.series is None else tif.series[self.series].pages
                planes, orientation = [], 1
                for k in self.pages:
                    page = pages[k]
                    key = page.keyframe  # a TiffFrame holds only data offsets; its metadata is its key frame's
                    a = page.asarray()
                    if key.axes.startswith("S"):  # planar RGB: samples first
                        a = np.moveaxis(a, 0, -1)
                    if a.dtype == bool:  # bilevel
                        a = a.astype(np.uint8) * np.uint8(255)
                    if key.photometric == _MINISWHITE and a.dtype.kind in "ui":
                        a = np.iinfo(a.dtype).max - a
                    # a palette (display LUT, as microscopy software writes them) is ignored: the indices are
                    # the measured intensities, which is what focus is judged on
                    planes.append(a)
                    orientation = key.tags.valueof(274, 1)
        except Exception as e:  # noqa: BLE001 - tifffile and codec errors alike mean an unreadable page to the user
            raise ValueError(f"cannot read {self} ({type(e).__name__}: {e})") from None
        raw = planes[0] if len(planes) == 1 else np.stack(planes, -1)
        if raw.ndim == 3 and raw.shape[-1] == 1:
            raw = raw[..., 0]
        if raw.ndim == 3 and raw.shape[-1] in (2, 4):
            raw = _drop_alpha(raw, self)  # type: ignore[arg-type]  # only named in the warning
        if not (raw.ndim == 2 or (raw.ndim == 3 and raw.shape[-1] == 3)):
            raise ValueError(f"cannot read {self}: a page of shape {raw.shape} (expected a grey or RGB image)")
        op = _ORIENT_NP.get(orientation)
        a = _native(op(raw) if op is not None else raw, self)  # type: ignore[arg-type]
        flat = a.reshape(-1, a.shape[-1] if a.ndim == 3 else 1)
        if flat.size and bool((flat == flat[0]).all()):
            value = flat[0].tolist()
            raise ValueError(f"{self} is blank (every pixel is {value[0] if len(value) == 1 else tuple(value)}): "
                             "remove that page from the stack (in Fiji: Image > Stacks > Delete Slice) and fuse again")
        return a


def stack_frames(path: str | os.PathLike) -> list[Path | TiffPage]:
    """The frames ``path`` stands for, in order, as sources that ``rediffuse.fuse.fuse`` reads when
    it needs them (only headers are read here):

    - a folder: its image files (``IMAGE_EXTENSIONS``; hidden and other files skipped) in natural
      order (``frame2`` before ``frame10``), each standing for its frames as below;
    - a multi-page TIFF (ImageJ/Fiji, Micro-Manager, OME-TIFF, or bare pages; grey or RGB, 8 or 16
      bits or float): one :class:`TiffPage` per z-slice. Pages of different sizes, hyperstacks that
      vary along more than one axis besides channels (time and z, say), and other than 1 or 3
      channels are one-line ``ValueError``s;
    - any other path: ``[Path(path)]`` (a missing or unreadable file is reported when it is read).

    Fewer than two frames is no error here: the caller says what a stack needs."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.iterdir()
                 if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        return [frame for p in sorted(files, key=_natural_key) for frame in _file_frames(p)]
    return _file_frames(path)


def _natural_key(p: Path) -> tuple[list[int | str], str]:
    """Sort key putting frame2 before frame10: the digit runs of the name compared as numbers."""
    parts = re.split(r"(\d+)", p.name)  # text, number, text, ...: each position holds one type
    return [int(t) if i % 2 else t.lower() for i, t in enumerate(parts)], p.name


def _file_frames(path: Path) -> list[Path | TiffPage]:
    """A multi-page TIFF's :class:`TiffPage` frames; ``[path]`` for any other file (a one-page TIFF
    included: Pillow reads it, with the conventions of :func:`read_image_native`)."""
    frames = _tiff_frames(path) if _is_tiff(path) else []
    return frames if len(frames) > 1 or (frames and len(frames[0].pages) > 1) else [path]  # type: ignore[return-value]


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in _TIFF_SIGNATURES
    except OSError:  # missing or unreadable: reported when the file is read
        return False


def _tiff_frames(path: Path) -> list[TiffPage]:
    """The z-slices of a TIFF file from its headers (nothing decoded), one-line errors naming it."""
    import tifffile  # optional import: ships with scikit-image

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0] if tif.series else None
            if series is not None and series.kind.lower() not in _PLAIN_KINDS:
                layout = (series.get_axes(False), series.get_shape(False), len(series.pages))
                sizes = None
            else:  # every page a frame, reduced-resolution copies (thumbnails) left out
                sizes = [(i, (p.imagelength, p.imagewidth)) for i, p in enumerate(tif.pages)
                         if not p.subfiletype & 1]
    except Exception as e:  # noqa: BLE001 - any tifffile error means an unreadable file to the user
        raise ValueError(f"cannot read {path} as a TIFF ({type(e).__name__}: {e})") from None
    if sizes is not None:
        if len({s for _, s in sizes}) > 1:
            groups: dict[tuple[int, int], list[int]] = {}
            for j, (_, s) in enumerate(sizes):
                groups.setdefault(s, []).append(j + 1)
            listing = "; ".join(f"{_numbers('page', nums)} {'is' if len(nums) == 1 else 'are'} {w}×{h}"
                                for (h, w), nums in groups.items())
            raise ValueError(f"{path}: its pages differ in size ({listing}); a z-stack's pages must all have one "
                             "size: remove or crop the odd pages and fuse again")
        return [TiffPage(path, j, len(sizes), (i,)) for j, (i, _) in enumerate(sizes)]
    return _series_frames(path, *layout)


def _series_frames(path: Path, axes: str, shape: tuple[int, ...], n_pages: int) -> list[TiffPage]:
    """Frames of ``TiffFile.series[0]`` with (unsqueezed) ``axes`` and ``shape`` over ``n_pages`` pages:
    its leading axes number the pages (C order), the rest (Y, X, samples) lie inside a page."""
    k = max(i for i in range(len(shape) + 1) if math.prod(shape[:i]) == n_pages)
    if set(axes[k:]) - set("YXS"):
        raise ValueError(f"cannot read {path} one z-slice at a time (its {axes} data is not laid out in pages); "
                         "save it as a plain TIFF stack (in Fiji: File > Save As > Tiff...) and fuse that")
    outer = list(zip(axes[:k], shape[:k]))
    varying = [(i, a, m) for i, (a, m) in enumerate(outer) if m > 1 and a != "C"]
    if len(varying) > 1:
        spec = " × ".join(f"{m} {_AXIS_NAMES.get(a, a + ' planes')}" for _, a, m in varying)
        raise ValueError(f"{path} is a hyperstack of {spec}, and a focus stack varies along one axis: save one "
                         "z-stack of it (in Fiji: Image > Duplicate..., one time point) and fuse that")
    channel_pages = math.prod(m for a, m in outer if a == "C")  # one page per channel: 3 make RGB
    samples = math.prod(m for a, m in zip(axes[k:], shape[k:]) if a == "S")  # inside a page: RGB, maybe alpha
    if channel_pages not in (1, 3) or (channel_pages == 3 and samples != 1):
        raise ValueError(f"{path} holds {channel_pages * samples} channels per z-slice, and rediffuse fuses grey "
                         "or RGB frames: fuse one channel at a time (in Fiji: Image > Color > Split Channels) or "
                         "merge them into RGB (Image > Color > Stack to RGB)")
    grid = np.arange(n_pages).reshape(shape[:k])
    count = varying[0][2] if varying else 1
    frames = []
    for j in range(count):
        # the frame's pages: its index along the varying axis, every channel, index 0 elsewhere
        at = tuple(j if varying and i == varying[0][0] else slice(None) if a == "C" else 0
                   for i, (a, _) in enumerate(outer))
        frames.append(TiffPage(path, j, count, tuple(int(p) for p in np.ravel(grid[at])), 0))
    return frames


def _numbers(noun: str, nums: list[int]) -> str:
    """``"page 4"``, ``"pages 1-3, 5"``: numbers with consecutive runs shortened."""
    runs: list[list[int]] = []
    for v in nums:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)
    return f"{noun}{'s' if len(nums) > 1 else ''} {text}"
