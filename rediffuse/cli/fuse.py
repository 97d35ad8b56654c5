"""``rediffuse fuse``: fuse a focus stack of image files into one all-in-focus image.

``add_parser(sub)`` registers the command; ``rediffuse.cli.main`` runs it and turns the one-line
exceptions raised here (``ValueError``, ``RuntimeError``, ``FileNotFoundError``, ``OSError``) into
``rediffuse fuse: error: <message>`` and exit code 1, or 2 for a ``UsageError`` (full traceback with
``rediffuse --debug``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .common import (UsageError, as_usage_error, flag_words, nonneg_int, number_type, one_line_warnings, runtime_parent,
                     seed_int, setup_runtime)

__all__ = ["add_parser", "run", "check_output_path", "check_not_an_input", "expand_inputs", "SAMPLER_NAMES",
           "ALIGN_CHOICES",
           "SPEED_CHOICES", "DEFAULT_CHECKPOINT_NAME"]

_PROG = "rediffuse fuse"

# Spelled out so that building the parser imports nothing heavy; tests check them against
# rediffuse.diffusion.SAMPLERS and rediffuse.fuse.DEFAULT_CHECKPOINT.
SAMPLER_NAMES = ("x0_regression", "ddim", "posterior_mean")
# rediffuse.align.ALIGN_MODES, spelled out for the same reason (a test compares them)
ALIGN_CHOICES = ("auto", "none", "translation", "similarity", "homography")
# rediffuse.fuse.COLOUR_MODES (a test compares them)
COLOUR_CHOICES = ("auto", "weights", "paper")
# rediffuse.fuse.SPEEDS and DEFAULT_SPEED (a test compares them)
SPEED_CHOICES = ("quality", "balanced", "fast")
DEFAULT_SPEED_NAME = "balanced"
STACK_MEGAPIXELS = 5.0  # rediffuse.fuse.STACK_MEGAPIXELS (a test compares them)
# rediffuse.fuse.PRECISIONS (a test compares them)
PRECISION_CHOICES = ("fp32", "bf16")
DEFAULT_CHECKPOINT_NAME = "rediffuse-layered-bconv.pt"

DESCRIPTION = """\
Fuse two or more photos of one scene focused at different depths into one image that is sharp
everywhere. A trained rotation-equivariant diffusion U-Net weighs the images' luminance at every
pixel; the weights are applied to R, G and B alike, so a pixel taken from one image keeps its exact
colour (--colour paper: colour (Cb, Cr) by the saturation-weighted rule of the ReDiffuse paper
instead). Grey inputs give a grey result; grey and colour mixed give colour (grey images count as
neutral, with a warning).

Stacks of three or more are fused order-independently: every frame gets a weight per pixel (a
softmax over the frames of the network's score for that frame against the mean of the others), so
any order of the images gives the same result; the frames are read one at a time, so a long stack
of large frames needs the memory of one. --depth-map writes which frame is sharpest at each pixel,
and --save-weights every frame's weight map. A pair is fused with one network run (--symmetric: two,
the same result for A B and B A).

Alignment: with --align auto (the default) a quick check registers the frames when one is
misaligned by more than a pixel (handheld shots, focus breathing) and says so; translation,
similarity (shift, rotation, scale) or homography force a model, none uses the frames as they are.
Frames are registered to the reference frame (--reference K, default the first) with OpenCV's ECC
on a luminance pyramid. The result keeps the reference frame's size and framing: where a
registered frame does not reach (near the borders), it takes no part and the other frames fill in
(the reference covers every pixel). A frame that cannot be registered is an error (with --align
auto: a warning, and the frames are fused as they are).

All images must have the same size. EXIF orientation is applied,
16-bit files (PNG, TIFF; grey or colour) are read at full precision, alpha channels are dropped
with a warning. Images need at least 8 pixels per side; below the network's own minimum they are
padded internally. The result has the size of the inputs; its format follows the extension of OUT
(.png, .jpg, .tif, .bmp, .webp, ...) and it is written atomically: a failed or interrupted run, or
a full disk, leaves no file behind. 16-bit inputs give a 16-bit result in PNG and TIFF (JPEG and
the other formats hold 8 bits: the result is rounded to 8 bits, with a note). OUT is never one of
the inputs: the command refuses to overwrite a source photo.

Speed (--speed, weight-map models): the network runs a few sampling steps, and only the last one
decides the weight map; the steps before it just hand it a starting estimate. "balanced" (the
default) runs those earlier steps at a quarter of the resolution; "quality" runs every step at full
resolution; "fast" runs the last step at half resolution too and brings its weight map to full size
along the sources' edges with a guided filter (faster again, somewhat lower scores). Above
--working-size megapixels (balanced 4, fast 1) the last step works on the image scaled down to that
size, its weight map upsampled along the edges of the full-size frames. What each speed costs and
scores, measured: docs/speed.md.

Large images are processed in overlapping tiles blended with smooth (raised-cosine) weights inside
every sampling step, so memory stays bounded and no seams appear."""

EPILOG = """\
examples:
  rediffuse fuse near.jpg far.jpg -o fused.png
  rediffuse fuse a.tif b.tif c.tif -o fused.tif --checkpoint runs/rot/last.pt
  rediffuse fuse stack/*.jpg -o fused.png --depth-map depth.png --save-weights weights/
  rediffuse fuse zstack.tif -o edf.tif --depth-map depth.tif --depth-index   # a microscope z-stack
  rediffuse fuse stack/ -o fused.tif                  # every image file in the folder, in natural order
  rediffuse fuse hand1.jpg hand2.jpg hand3.jpg -o out.jpg --align similarity --reference 2
  rediffuse fuse a.png b.png -o out.png --align none --symmetric
  rediffuse fuse a.png b.png -o out.png --device cuda --steps 5 --seed 1
  rediffuse fuse big_a.jpg big_b.jpg -o big.jpg --tile 512 --overlap 128
  rediffuse fuse a.jpg b.jpg -o out.jpg --speed fast            # faster than balanced, scores a little lower
  rediffuse fuse big_a.jpg big_b.jpg -o big.jpg --working-size 0   # the last step at full size, however large
  rediffuse fuse a.png b.png -o out.png --tile 0      # whole image at once (more memory)
  rediffuse fuse a.png b.png -o out.png --sampler ddim --steps 10 --threads 1 -q
  rediffuse --debug fuse a.png b.png -o out.png      # full traceback on errors

z-stacks and folders: a multi-page TIFF (as ImageJ/Fiji, Micro-Manager and most microscope software
save a z-stack; OME-TIFF too; grey or RGB, 8 or 16 bit) is a whole stack: each page, or each z-slice
of an ImageJ/OME hyperstack (3 channels make RGB), is one frame, decoded when it is needed, so a
stack of 100 pages is never in memory at once. A folder stands for the image files in it, in
natural order (frame2 before frame10; hidden and non-image files are skipped). Arguments of either
kind can be mixed with single images; --reference counts the frames they give. 16-bit frames give a
16-bit result (.tif, .png). Pages of different sizes, a blank page (one value everywhere: remove it)
and a hyperstack that varies in more than z (time and z, say) are refused with one line naming them.
--depth-map with --depth-index writes the frame index itself (0 = the first frame) as a 16-bit grey
PNG or TIFF, e.g. a height map to measure in Fiji.

exit status: 0 on success, 1 on an error (one line on stderr), 2 on a usage error (also one line:
fewer than two images, counting the frames of folders and TIFFs; an output that is one of the
inputs; a bad option value)."""


# FusionModel.settings names these settings in its errors; they are the options of the same names
_SETTINGS = ("sampler", "steps", "tile", "overlap", "seed", "speed", "scale", "working_size")
_fraction = number_type(float, lambda x: 0 < x <= 1, "a fraction in (0, 1]", "fraction")
_megapixels = number_type(float, lambda x: 0 <= x < float("inf"), "megapixels ≥ 0 (0: no limit)", "megapixels")
# parsed only: whether a number of steps or a frame index fits is the library's check (mapped to the flag)
_whole = number_type(int, lambda n: True, "a whole number", "whole")


def _pixels_arg(value: str) -> int:
    """argparse type of --max-pixels: a whole number of pixels, or megapixels with M (200M); 0 = no limit."""
    text = value.strip().upper()
    try:
        n = float(text[:-1]) * 1e6 if text.endswith("M") else int(text)
    except ValueError:
        n = -1
    if not 0 <= n < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of pixels such as 200000000 or 200M (0: no limit), "
                                         f"got {value!r}")
    return int(n)


def _tile_arg(value: str) -> int | str:
    """argparse type of --tile: "auto" or a whole number of pixels ≥ 0."""
    return "auto" if value.lower() == "auto" else nonneg_int(value)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``fuse`` sub-command to an ``add_subparsers()`` object; returns its parser.

    Cheap: nothing heavy (torch, numpy) is imported until the command runs."""
    p = subparsers.add_parser(
        "fuse", help="fuse a focus stack (2 or more images) into one all-in-focus image",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION, epilog=EPILOG,
        parents=[runtime_parent()])
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="input images (at least two, same size; grey or colour, 8 or 16 bit), a multi-page TIFF "
                        "z-stack (every page a frame) or a folder of images (natural order)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output image; the format follows the extension (e.g. fused.png, fused.jpg)")
    p.add_argument("--checkpoint", metavar="P", default=None,
                   help=f"trained model checkpoint (default: the shipped {DEFAULT_CHECKPOINT_NAME}; "
                        "e.g. a run's last.pt from `rediffuse train`), or a shipped model by name: weights "
                        "(the default), weights-small (the first, smaller Rot-E model), weights-plain (its plain twin), "
                        "paper (the paper's noise-prediction model, trained like weights-small)")
    _add_sampling_options(p)
    _add_stack_options(p)
    _add_output_options(p)
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no summary lines (warnings and errors are still printed)")
    p.set_defaults(func=run)
    return p


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    """How the network samples: steps, sampler, tiles, speed, precision, seed."""
    p.add_argument("--steps", type=_whole, metavar="K", default=None,
                   help="sampling steps, 1 to the model's T (default: the checkpoint's: 3 for image/weight-map "
                        "models, all T for noise-prediction models); example: --steps 5")
    p.add_argument("--sampler", metavar="NAME", default=None,
                   help=f"sampler: {', '.join(SAMPLER_NAMES)} (default: x0_regression for image/weight-map "
                        "models, posterior_mean for noise-prediction models); example: --sampler ddim")
    p.add_argument("--tile", type=_tile_arg, metavar="N", default="auto",
                   help="largest tile side in pixels for bounded memory: 'auto' (the side whose activations fit "
                        "a fixed memory budget: 768 px for the default model), 0 = whole image; "
                        "example: --tile 512 (default: %(default)s)")
    p.add_argument("--overlap", type=nonneg_int, metavar="N", default=None,
                   help="overlap of neighbouring tiles in pixels, less than half a tile "
                        "(default: a quarter of the tile); example: --overlap 128")
    p.add_argument("--speed", choices=SPEED_CHOICES, default=None,
                   help="quality = every sampling step at full resolution; balanced = the steps before the last "
                        "at a quarter of it; fast = the last step at half resolution too, its weight map upsampled "
                        "along the images' edges (what each costs and scores: docs/speed.md); "
                        f"default: {DEFAULT_SPEED_NAME} for weight-map models, quality for the others")
    p.add_argument("--scale", type=_fraction, metavar="F", default=None,
                   help="resolution of the last sampling step as a fraction of the image side, overriding the "
                        "speed's (the full side for quality and balanced, half of it for fast); example: --scale 0.75")
    p.add_argument("--working-size", type=_megapixels, metavar="MP", default=None,
                   help="the most megapixels the last sampling step works on: larger images are processed "
                        "scaled down to it and their weight maps upsampled along the edges (balanced 4, fast 1, "
                        "quality 0 = no limit); example: --working-size 12")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                   help="network arithmetic: fp32, or bf16 (bfloat16: faster only where the CPU or GPU has "
                        "bfloat16 instructions; a quarter-turned input is then fused alike only to bfloat16 "
                        "rounding; docs/speed.md); default: %(default)s")
    p.add_argument("--seed", type=seed_int, metavar="S", default=0,
                   help="seed of the initial noise, 0 to 2**63 - 1; the same seed gives the same result "
                        "(default: %(default)s)")


def _add_stack_options(p: argparse.ArgumentParser) -> None:
    """How the frames are treated: alignment, reference, symmetry, colour, flat regions, budgets."""
    p.add_argument("--align", choices=ALIGN_CHOICES, default="auto",
                   help="register the frames first: auto = only when a quick check finds them misaligned by more "
                        "than a pixel (similarity), none = use them as they are, or force translation, similarity "
                        "(shift, rotation, scale: handheld, focus breathing) or homography; the result keeps the "
                        "reference frame's size, frames taking no part where they do not reach "
                        "(default: %(default)s, for photos; the Python function fuse() defaults to none, for "
                        "arrays a program has registered already); example: --align similarity")
    p.add_argument("--reference", type=_whole, metavar="K", default=1,
                   help="the frame the others are registered to, 1 = the first image (default: %(default)s); "
                        "example: --reference 3")
    p.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=None,
                   help="order-independent fusion: every image is weighed against the mean of the others (one "
                        "network run per image, so a pair takes two runs instead of one); on for three or more "
                        "images, off for pairs; --no-symmetric folds a stack pairwise in the order given")
    p.add_argument("--colour", "--color", choices=COLOUR_CHOICES, default="auto",
                   help="how colour images get their colour: weights = each image's weight map applied to its R, G "
                        "and B; paper = the fused luminance with chroma by the paper's saturation-weighted rule; "
                        "auto = weights for weight-map models, paper for the others (default: %(default)s)")
    p.add_argument("--evidence-fill", action=argparse.BooleanOptionalAction, default=True,
                   help="where every frame is flat (sky, white paper), give each weight the decision of the "
                        "nearest structure, so that frames of different exposure "
                        "leave no blotches (default: on); --no-evidence-fill keeps the network's own weights there")
    p.add_argument("--exposure-blend", action=argparse.BooleanOptionalAction, default=True,
                   help="blend the frames at one smooth local exposure, so that where the weights "
                        "switch between frames of different exposure or colour no patch shows (default: on); "
                        "--no-exposure-blend blends the frames' pixels as they are")
    p.add_argument("--stack-megapixels", type=_megapixels, metavar="MP", default=None,
                   help="stacks of three or more frames: the network megapixels the frames share, each frame's "
                        f"last step at most MP / N megapixels (default: {STACK_MEGAPIXELS:g}; 0 = each frame at "
                        "--working-size; an explicit --working-size also turns it off)")
    p.add_argument("--max-pixels", type=_pixels_arg, metavar="N", default=None,
                   help="refuse, from its header and before decoding it, an image of more pixels than this (e.g. "
                        "200M; 0 = no limit); default: as many as this machine's memory can fuse, at 160 bytes "
                        "per pixel")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """What is written besides the fused image: depth map, weight maps."""
    p.add_argument("--depth-map", metavar="OUT", default=None,
                   help="also write the index of the frame with the largest weight at each pixel: frame i of N "
                        "(from 0) at grey round(i * 255 / (N - 1)), or i itself with --depth-index; "
                        "example: --depth-map depth.png")
    p.add_argument("--depth-index", action="store_true",
                   help="with --depth-map: write the frame index itself (0 = the first frame) as 16-bit grey "
                        "integers, so the map needs a .png or .tif name; example: --depth-map depth.tif --depth-index")
    p.add_argument("--save-weights", metavar="DIR", default=None,
                   help="also write every frame's weight map into DIR (weight-01.png, ...: 16-bit grey, "
                        "weight x 65535); example: --save-weights weights/")


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse, before any work is done, an output that could not be written (one-line errors).

    The extension must name a format Pillow can write; the path must not be a folder; its nearest
    existing ancestor must be a writable folder (missing folders are created when writing)."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; name the output file, e.g. {path / 'fused.png'}")
    ext = path.suffix.lower()
    if not ext:
        raise ValueError(f"cannot write {path}: no file extension; the format comes from it (.png, .jpg, .tif, ...)")
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot write {path}: unknown image extension {ext!r} "
                         "(use e.g. .png, .jpg, .tif, .bmp, .webp)")
    anc = path.absolute().parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: folder {anc} is not writable")
    return path


def check_not_an_input(output: str | os.PathLike, inputs: list[str]) -> None:
    """Refuse (``UsageError``) an output that is one of the inputs, however it is spelled: the same
    resolved path, or the same file by device and inode (``os.path.samefile``: hard links,
    symbolic links, case-insensitive file systems). Writing it would replace the user's photo."""
    out = Path(output)
    if not out.exists():  # a file that is not there yet cannot be an input
        return
    resolved = out.resolve()
    for name in inputs:
        try:
            same = Path(name).resolve() == resolved or os.path.samefile(out, name)
        except OSError:  # a missing input: reported when it is read
            continue
        if same:
            suggestion = out.with_name(f"{out.stem}_fused{out.suffix}")
            raise UsageError(f"the output {out} is the input {name}; writing it would destroy that photo: "
                             f"name a new file with -o, e.g. -o {suggestion}")


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"{_PROG}: {flag_words(msg)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """The ``fuse`` command: read, check, fuse, write. Raises one-line exceptions on errors."""
    from PIL import Image

    guard = Image.MAX_IMAGE_PIXELS  # _run replaces Pillow's guard by its own check; others keep Pillow's
    try:
        with one_line_warnings(_PROG):
            return _run(args)
    finally:
        Image.MAX_IMAGE_PIXELS = guard


def _run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    images, files = expand_inputs([str(p) for p in args.images], lambda msg: _say(msg, args.quiet))
    if len(images) < 2:
        raise UsageError(_too_few(args.images, images))
    opts = _options(args, len(images))
    out_path, depth_path, weights_dir = _check_outputs(args, files)
    opts = dataclasses.replace(opts, depth_map=depth_path, save_weights=weights_dir)

    import numpy as np
    from PIL import Image

    from ..fuse import FusionModel, fuse
    from ..imageio import SIXTEEN_BIT_FORMATS, write_image
    from ..stack import check_pixels

    # the pixel limit (--max-pixels, or what this machine's memory can fuse), checked from the headers
    # before anything is decoded, replaces Pillow's own guard (a warning above 89 MP, an error above 179)
    Image.MAX_IMAGE_PIXELS = None
    check_pixels(images, [str(im) for im in images], opts.max_pixels)

    device = setup_runtime(args)
    fm = FusionModel(args.checkpoint, device=device, precision=args.precision)
    try:
        st = fm.settings(args.sampler, args.steps, tile=args.tile, overlap=args.overlap, seed=args.seed,
                         speed=args.speed, scale=args.scale, working_size=args.working_size)
    except ValueError as e:  # a bad option value, found by the model that knows the limits: exit code 2
        raise as_usage_error(e, _SETTINGS) from None
    opts = opts.for_stack(len(images), fm)
    _summary(args, images, fm, st, opts, device)
    result = fuse(images, fm, options=opts, settings=st, progress=not args.quiet, names=[str(im) for im in images],
                  log=lambda msg: _say(msg, args.quiet))
    write_image(out_path, result)
    fmt = Image.registered_extensions().get(out_path.suffix.lower())
    bits = 16 if result.dtype == np.uint16 and fmt in SIXTEEN_BIT_FORMATS else 8
    extra = "".join([f", depth map {depth_path}" if depth_path else "",
                     f", weight maps in {weights_dir}" if weights_dir else ""])
    _say(f"wrote {out_path} ({result.shape[1]}×{result.shape[0]}, {bits}-bit{extra}, "
         f"{time.perf_counter() - t_start:.1f} s)", args.quiet)
    return 0


def _options(args: argparse.Namespace, n: int):
    """The library's ``FuseOptions`` from the flags; its one-line errors as usage errors of the flags
    (``--reference`` counts from 1 where the library counts from 0)."""
    from ..fuse import FuseOptions

    if args.depth_index and not args.depth_map:
        raise UsageError("--depth-index says how to write the depth map: add --depth-map OUT, "
                         "e.g. --depth-map depth.tif")
    try:
        opts = FuseOptions(align=args.align, reference=args.reference - 1, symmetric=args.symmetric,
                           colour=args.colour, evidence_fill=args.evidence_fill, exposure=args.exposure_blend,
                           depth_map=args.depth_map,
                           depth_index=args.depth_index, max_pixels=args.max_pixels,
                           # an explicit --working-size turns the shared budget off
                           stack_megapixels=0 if args.working_size is not None else args.stack_megapixels)
        return opts.check(n)
    except ValueError as e:
        if str(e).startswith("reference"):
            raise UsageError(f"--reference {args.reference} names no image: there are {n} (1 to {n})") from None
        if str(e).startswith("a depth map of frame indices"):
            raise UsageError(f"--depth-index writes 16-bit frame indices, which {args.depth_map} cannot hold: "
                             "name a .png or .tif depth map") from None
        raise as_usage_error(e, ("align", "colour", "stack_megapixels", "max_pixels")) from None


def _check_outputs(args: argparse.Namespace, files: list[str]) -> tuple[Path, Path | None, Path | None]:
    """The output image, depth map and weight folder, refused before any work when they cannot be
    written or would replace an input."""
    for out in [args.output] + ([args.depth_map] if args.depth_map else []):
        check_not_an_input(out, files)
    out_path = check_output_path(args.output)
    depth_path = check_output_path(args.depth_map) if args.depth_map else None
    if depth_path is not None and depth_path.absolute() == out_path.absolute():
        raise UsageError(f"--depth-map {depth_path} is the output image too; name another file")
    weights_dir = _check_weights_dir(args.save_weights, files) if args.save_weights else None
    return out_path, depth_path, weights_dir


def _summary(args: argparse.Namespace, images: list, fm, st, opts, device: str) -> None:
    """One line before the work: the stack, the model, the sampling and how it is tiled."""
    import numpy as np

    from ..fuse import load_stack_image, stack_settings

    first = load_stack_image(images[opts.reference])  # frames are read again as they are fused
    h, w = first.shape[:2]
    kind = ("colour" if first.ndim == 3 else "grey") + (", 16-bit" if first.dtype == np.uint16 else "")
    del first
    st = stack_settings(fm, st, len(images), opts.symmetric, opts.stack_megapixels)  # what fuse() will use
    sizes = fm.step_sizes(h, w, st)
    n_tiles = fm.count_evaluations(*sizes[-1], 1, st.tile, st.overlap)
    at = ", ".join(f"{n}× {sw}×{sh}" for n, (sh, sw) in _runs(sizes))
    tiles = f"{n_tiles} tiles of ≤{st.tile} px (overlap {st.overlap})" if n_tiles > 1 else "whole image"
    _say(f"{len(images)} images ({kind}, {w}×{h}); {fm.path.name} ({fm.prediction}), {st.sampler} {st.steps} steps "
         f"({at}), seed {st.seed}, {device}" + (" bf16" if args.precision == "bf16" else "") + f", {tiles}",
         args.quiet)


def expand_inputs(args: list[str], say: Callable[[str], None] = lambda msg: None) -> tuple[list, list[str]]:
    """The frames the IMAGE arguments stand for, in order (``rediffuse.imageio.stack_frames``): a folder
    gives its image files in natural order, a multi-page TIFF its pages (``TiffPage``: decoded when
    fused), any other argument itself. Returns ``(frames, files)``: ``files`` are the files read (the
    output must be none of them). Each folder or z-stack is noted to ``say`` in one line."""
    from ..imageio import IMAGE_EXTENSIONS, TiffPage, stack_frames

    frames: list = []
    files: list[str] = []
    for arg in args:
        found = stack_frames(arg)
        if Path(arg).is_dir():
            if not found:
                raise UsageError(f"the folder {arg} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                                 "name a folder of frames or the images themselves")
            names = [f"{f.path.name} page {f.index + 1}" if isinstance(f, TiffPage) else f.name for f in found]
            listing = ", ".join(names if len(names) <= 6 else names[:3] + ["…"] + names[-2:])
            say(f"{arg}: {len(found)} image{'' if len(found) == 1 else 's'} in natural order: {listing}")
            frames += found
            files += list(dict.fromkeys(str(f.path if isinstance(f, TiffPage) else f) for f in found))
        elif isinstance(found[0], TiffPage):
            say(f"{arg}: a z-stack of {len(found)} pages")
            frames += found
            files.append(arg)
        else:  # a single image: kept as spelled, so messages name it as the user did
            frames.append(arg)
            files.append(arg)
    return frames, files


def _too_few(args: list[str], frames: list) -> str:
    """The usage error for a stack of fewer than two frames, saying what the arguments hold."""
    listing = ", ".join(str(f) for f in frames) or "none"
    why = ""
    if len(args) == 1 and Path(args[0]).is_dir():
        why = f": the folder {args[0]} holds one image"
    elif len(args) == 1 and Path(args[0]).is_file():
        why = ": it holds one image"
    return (f"need at least two images to fuse, got {len(frames)} ({listing}){why}; a stack needs two or more: "
            "name more images, a multi-page TIFF z-stack or a folder of frames, "
            "e.g. rediffuse fuse near.jpg far.jpg -o fused.png")


def _runs(sizes: list[tuple[int, int]]) -> list[tuple[int, tuple[int, int]]]:
    """``[(count, size), ...]``: consecutive equal step sizes counted (for the summary line)."""
    out: list[tuple[int, tuple[int, int]]] = []
    for size in sizes:
        if out and out[-1][1] == size:
            out[-1] = (out[-1][0] + 1, size)
        else:
            out.append((1, size))
    return out


def _check_weights_dir(folder: str, inputs: list[str]) -> Path:
    """Refuse, before any work, a --save-weights folder that is a file or holds an input image
    (its weight-NN.png files could replace one)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--save-weights {path} is a file; name a folder for the weight maps, e.g. weights/")
    for name in inputs:
        if Path(name).absolute().parent == path.absolute() and Path(name).name.startswith("weight-"):
            raise UsageError(f"--save-weights {path} holds the input {name}, which a weight map could overwrite; "
                             "name another folder")
    return path
