"""Data for multi-focus fusion: colour conversion (``data.colour``), folder datasets (``data.folders``)
and synthetic pairs from scikit-image photos (``data.synthetic``); every name is importable from here.

Conventions shared by every model and script of the project:

- Images on disk and in numpy are ``uint8``, ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB).
- Model tensors are float32 in ``[-1, 1]``: ``[1, H, W]`` for the luminance Y (ReDiffuse works on Y
  only), ``[3, H, W]`` for RGB (FusionDiff); ``x = v / 127.5 - 1`` for a value ``v`` in 0-255.
- Colour space: ITU-R BT.601 *full range* Y'CbCr as used by JPEG/JFIF, on 0-255 floats:
  ``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cb = 128 + 0.5 (B - Y) / 0.886``,
  ``Cr = 128 + 0.5 (R - Y) / 0.701``. No studio-range (16-235) offsets. Y is the same number as
  Pillow's ``convert("L")`` before rounding.
- Chroma fusion (the rule of the ReDiffuse and FusionDiff code):
  ``C = sum_i C_i |C_i - 128| / sum_i |C_i - 128|``, 128 where every source is exactly 128.
"""
from __future__ import annotations

from .colour import (center_crop, fuse_chroma, image_to_tensor, luma, luminance, recombine, recombine_float, rgb_to_ycbcr,
                     tensor_to_image, ycbcr_to_rgb)
from .folders import NYU_TEST_STEMS, NYU_TRAIN_STEMS, FusionFolder
from .synthetic import (DEFAULT_SYNTHETIC_DIR, SKIMAGE_PHOTOS, SyntheticPairs, blur, focus_mask,
                        generate_synthetic_folder, make_pair, shape_field, skimage_depth, skimage_photo)

__all__ = [
    "rgb_to_ycbcr", "ycbcr_to_rgb", "luminance", "luma", "fuse_chroma", "recombine", "recombine_float",
    "image_to_tensor", "tensor_to_image", "center_crop",
    "FusionFolder", "NYU_TRAIN_STEMS", "NYU_TEST_STEMS",
    "SKIMAGE_PHOTOS", "skimage_photo", "skimage_depth",
    "focus_mask", "shape_field", "blur", "make_pair", "SyntheticPairs", "generate_synthetic_folder",
    "DEFAULT_SYNTHETIC_DIR",
]
