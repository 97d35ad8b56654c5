"""Focus stacks of N frames in bounded memory: registration, order-independent weights, outputs.

This module knows nothing about networks (as ``diffusion`` knows nothing about U-Nets): the fusion
pipeline (``rediffuse.fuse``) hands it a *logit function* ``logit(y, r) -> l`` (the pair model's raw
weight output for source ``y`` against ``r``) or a *pair function* (one pairwise fusion), and this
module streams the frames through it.

- **Frames are streamed.** A :class:`FrameReader` reads frame i when it is needed (``load(i)``: a file
  is decoded again, an array is used as it is) and resamples it onto the reference frame's grid when
  the stack is registered. No pass holds more than one frame at a time, so a stack of 50 frames
  costs the memory of one frame plus a few running sums of its size.
- **Passes.** (0) :meth:`FrameReader.survey`: sizes, colour, bit depth, and registration (a cheap
  check for ``align="auto"``); (1) :func:`accumulate`: the frame sum (for the "rest of the stack"
  each frame is compared with) and the chroma sums; (2) :func:`fuse_softmax` or :func:`fuse_fold`:
  the luminance, one network run per frame; (3) the weight maps, from the logits kept on disk.
- **Order-independent N-frame fusion** (:func:`fuse_softmax`): the logit of frame i is
  ``l_i = f(Y_i, R_i)`` with ``R_i`` the mean of the other frames, and the fused luminance is
  ``Σ_i softmax_i(l_i / τ) · Y_i``, τ = 2. Nothing depends on the order of the frames. For N = 2,
  ``R_1 = Y_2`` and the weight of the first frame is ``σ((f(A, B) − f(B, A)) / 2)``: the pair model
  made symmetric in its two inputs (swapping A and B swaps the weights exactly). The softmax is
  computed online (running maximum m, denominator ``Σ e^{l_i/τ − m}``, numerator
  ``Σ e^{l_i/τ − m} Y_i``, rescaled when m grows), as FlashAttention does.
- **Borders of registered frames.** Pixels of the reference grid that a registered frame does not
  cover (``align.warp``'s mask) give that frame weight 0 there, in the luminance and the chroma; the
  reference covers every pixel, so each output pixel is fused from the frames that see it and the
  result keeps the reference frame's size and framing. The network itself sees the frame with its
  edge pixels repeated there. Towards the edge of its coverage a frame fades out (in the N-frame
  softmax: its logit lowered over the last ``FEATHER`` of the longer side), so that its last row
  draws no seam through the result.
- **Colour** (colour stacks, luminance models). By default (``colour="weights"``) each frame's weight
  map is applied to its R, G and B alike, so a region taken from one frame has that frame's pixels,
  colour included (with ``exposure``, at the common exposure of ``rediffuse.exposure``). The
  paper's rule (``colour="paper"``): the fused luminance joined with chroma fused by the
  saturation-weighted rule ``Σ C_i |C_i − 128| / Σ |C_i − 128|``
  over all frames (``rediffuse.data.fuse_chroma``), summed frame by frame in float64 (the same sums,
  in the same order, as the in-memory rule, so the result is identical).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from .align import (AUTO_RESIDUAL, AUTO_THRESHOLD_PX, CHECK_SIDE, MAX_SIDE, Pyramid, Registration,
                    RegistrationError, displacement, register, warp, warp_residual)
from .atomic import disk_full
from .data import image_to_tensor, luma, rgb_to_ycbcr
from .evidence import Evidence
from .exposure import ExposureBlend
from .imageio import TiffPage, image_size

__all__ = ["FrameReader", "StackInfo", "OnlineSoftmax", "accumulate", "fuse_softmax", "fuse_fold", "check_sizes",
           "check_pixels", "default_max_pixels", "machine_memory", "FUSION_BYTES_PER_PIXEL",
           "TAU", "STRIP_ROWS", "strips", "coverage_penalty",
           "FEATHER", "FEATHER_LOGIT", "KEEP_FRAMES_BYTES"]

#: Temperature of the softmax over the frames' logits: τ = 2 makes the N = 2 case σ((l_A − l_B) / 2).
TAU = 2.0
#: A registered frame of a stack fades out towards the edge of its coverage over this share of the
#: image's longer side (:func:`coverage_penalty`): where it stopped at once, its last row or column
#: drew a straight seam through the result (focus breathing leaves every frame's edge elsewhere).
FEATHER = 1 / 64
#: ... its logit (in units of l/τ) lowered linearly from 0 at that distance to this at the edge: more
#: than the gap between a sharp frame and a blurred one, so the hand-over happens inside the band;
#: the larger the gap, the nearer the edge and the steeper it is (over about 4 / this of the band).
FEATHER_LOGIT = 24.0
#: A stack whose frames (as read, 8-bit, or as float32 otherwise, with their coverage masks) fit in
#: this many bytes is kept in memory after its first pass (``FrameReader``): ten 3-MP colour JPEGs
#: take 126 MB and are decoded and resampled once instead of twice; a longer or larger stack streams.
KEEP_FRAMES_BYTES = 256 * 2**20
#: Rows per strip when a whole-image computation is done piecewise (bounded temporaries).
STRIP_ROWS = 256
# Logit given to a frame where it does not cover the reference grid: exp(_OUTSIDE − m) is 0 for any
# finite m. Finite rather than −inf so that a pixel not yet covered by any frame (m = _OUTSIDE) gives
# no NaN; the reference frame covers every pixel, so such pixels are rescaled to weight 0 later.
_OUTSIDE = np.float32(-1e30)

Loader = Callable[[int], "tuple[np.ndarray, int]"]


def strips(height: int, rows: int = STRIP_ROWS):
    """Row slices of at most ``rows`` covering ``height``: whole-image work done piecewise."""
    for r in range(0, height, rows):
        yield slice(r, min(r + rows, height))


def check_sizes(sizes: Sequence[tuple[int, int]], names: Sequence[str], min_side: int) -> None:
    """Refuse (one-line ``ValueError``) frames of different sizes ``(H, W)`` or smaller than ``min_side``."""
    if len(set(sizes)) > 1:
        listing = ", ".join(f"{n} {s[1]}×{s[0]}" for n, s in zip(names, sizes))
        hint = ""
        if len({tuple(sorted(s)) for s in sizes}) == 1:
            hint = " (some look rotated by 90°: check their EXIF orientation)"
        raise ValueError(f"the images differ in size: {listing}{hint}; register (align) or resize them to "
                         "one size first")
    h, w = sizes[0]
    if min(h, w) < min_side:
        raise ValueError(f"the images are {w}×{h} pixels, too small to fuse: rediffuse needs at least "
                         f"{min_side} pixels per side (smaller images up to the network's minimum are padded)")


#: Memory per pixel of one frame that fusing a stack needs at its peak, beyond ``_FIXED_BYTES`` for
#: the network's tiles: peak RSS of ``rediffuse fuse`` on three 16-bit colour frames grew by 150 B
#: per pixel from 1 to 2 MP (default model and speed), rounded up.
FUSION_BYTES_PER_PIXEL = 160
_FIXED_BYTES = 2**30


def machine_memory() -> int | None:
    """Bytes of memory this process may use: the physical memory, or a container's (cgroup) limit
    when that is lower; ``None`` where neither can be read."""
    try:
        total: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max": no limit
            total = min(total or int(text), int(text))
    return total


def default_max_pixels() -> int:
    """The most pixels per frame whose fusion fits this machine's memory (0: unknown, no limit)."""
    mem = machine_memory()
    return max((mem - _FIXED_BYTES) // FUSION_BYTES_PER_PIXEL, 1) if mem else 0


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_pixels(frames: Sequence, names: Sequence[str], max_pixels: int | None = None) -> None:
    """Refuse, from the files' headers alone (nothing decoded), a frame of more than ``max_pixels``
    pixels (``None``: :func:`default_max_pixels`, from this machine's memory; 0: no limit), with a
    one-line ``ValueError`` stating what its fusion would need. Arrays are in memory already and
    pass; a file Pillow itself refuses as a decompression bomb is a one-line error too."""
    default = max_pixels is None
    limit = default_max_pixels() if default else int(max_pixels)
    for frame, name in zip(frames, names):
        if not isinstance(frame, (str, os.PathLike, TiffPage)):
            continue
        w, h = image_size(frame)
        if not limit or w * h <= limit:
            continue
        need = _gb(FUSION_BYTES_PER_PIXEL * w * h + _FIXED_BYTES)
        if default:
            why = f"more than this machine's {_gb(machine_memory() or 0)} of memory can fuse ({limit / 1e6:.3g} MP)"
        else:
            why = f"more than max_pixels={limit} allows"
        raise ValueError(f"{name} is {w}×{h} pixels ({w * h / 1e6:.3g} MP), {why}: fusing it needs about {need} "
                         "of memory; fuse a smaller copy, or raise the limit with max_pixels=N where that memory is there")


@dataclass
class StackInfo:
    """What :meth:`FrameReader.survey` found: frame size, colour flags and bits per frame, and the
    alignment decision (``motion`` None: the frames are used as they are)."""

    height: int
    width: int
    colour: list[bool]
    bits: list[int]
    motion: str | None = None
    largest_move_px: float = 0.0
    notes: list[str] = field(default_factory=list)


class FrameReader:
    """The frames of a stack, read one at a time with ``load(i) -> (array, bits)`` (``uint8`` or
    float32 0–255, ``[H, W]`` or ``[H, W, 3]``) and, once registered, resampled onto the grid of
    frame ``reference`` (an index checked by ``fuse.FuseOptions``). ``names`` label the frames in messages."""

    def __init__(self, load: Loader, names: Sequence[str], reference: int = 0):
        self.load, self.names, self.reference = load, list(names), reference
        self.n = len(self.names)
        self.registrations: list[Registration] | None = None
        self._kept: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = None

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame ``i`` on the reference grid and where it covers it (``None``: everywhere); read-only
        when the whole stack is kept in memory (see :meth:`survey`)."""
        if self._kept is not None and i in self._kept:
            return self._kept[i]
        a, _ = self.load(i)
        reg = self.registrations[i] if self.registrations else None
        out = (a, None) if reg is None or reg.is_identity else warp(a, reg.matrix)
        if self._kept is not None:
            out = tuple(None if x is None else x.view() for x in out)
            for x in out:
                if x is not None:
                    x.setflags(write=False)  # one array serves every pass: none may change it
            self._kept[i] = out
        return out

    def _keep_if_small(self, sizes: Sequence[tuple[int, int]], colour: Sequence[bool], bits: Sequence[int]) -> None:
        """Keep the frames, as resampled, in memory after their first read when all of them fit in
        ``KEEP_FRAMES_BYTES``: the passes after the first then neither decode nor resample them again."""
        need = sum(h * w * ((3 if c else 1) * (1 if b == 8 else 4) + 1) for (h, w), c, b in zip(sizes, colour, bits))
        self._kept = {} if need <= KEEP_FRAMES_BYTES else None

    def survey(self, align: str = "none", min_side: int = 8,
               log: Callable[[str], None] | None = None) -> StackInfo:
        """Read every frame once: check their sizes, note colour and bit depth, and register them as
        ``align`` says (a name of ``rediffuse.align.ALIGN_MODES``, checked by ``fuse.FuseOptions``).
        ``"auto"`` registers on a small pyramid
        level first and registers the whole stack (similarity) only when a frame is measurably
        misaligned (more than ``AUTO_THRESHOLD_PX``); each decision is one line to ``log``."""
        say = log or (lambda msg: None)
        order = [self.reference] + [i for i in range(self.n) if i != self.reference]
        sizes: list[tuple[int, int] | None] = [None] * self.n
        colour, bits = [False] * self.n, [8] * self.n
        motion = None if align == "none" else ("similarity" if align == "auto" else align)
        side = CHECK_SIDE if align == "auto" else MAX_SIDE
        ref_pyr, regs, prev = None, [None] * self.n, None
        failed: list[RegistrationError] = []
        trusted = [True] * self.n  # "auto": whether a frame's warp explains a motion (align.AUTO_RESIDUAL)
        for i in order:
            a, bits[i] = self.load(i)
            sizes[i], colour[i] = a.shape[:2], a.ndim == 3
            if motion is None or sizes[i] != sizes[self.reference] or min(sizes[i]) < min_side:
                continue
            if i == self.reference:
                ref_pyr = Pyramid(luma(a), side)
                regs[i] = Registration(np.eye(3), motion, 1.0)
                continue
            try:
                pyr = Pyramid(luma(a), side)
                regs[i] = self._register(ref_pyr, pyr, motion, prev, i)
                prev = regs[i].matrix
                if align == "auto":
                    # differently focused frames of one geometry pull ECC off by pixels on small
                    # frames; such a warp leaves their phase disagreement as it was
                    trusted[i] = warp_residual(ref_pyr, pyr, prev) <= AUTO_RESIDUAL
            except RegistrationError as e:
                failed.append(e)  # the others are still tried: they tell which frame is the odd one out
        check_sizes(sizes, self.names, min_side)  # type: ignore[arg-type]
        self._keep_if_small(sizes, colour, bits)  # type: ignore[arg-type]
        h, w = sizes[0]  # type: ignore[misc]
        info = StackInfo(h, w, colour, bits)
        if motion is None:
            return info
        if failed:
            failure = self._blame(failed, motion)
            if align != "auto":
                raise failure
            msg = (f"could not check whether the frames are aligned ({getattr(failure, 'short', failure)}); "
                   "fused as they are (align=similarity forces registration, align=none skips the check)")
            warnings.warn(msg, stacklevel=3)
            info.notes.append(msg)
            return info
        moves = [displacement(r.matrix, (h, w)) if ok else 0.0 for r, ok in zip(regs, trusted)]
        info.largest_move_px = max(moves)
        worst = max(range(self.n), key=moves.__getitem__)
        if align == "auto":
            if info.largest_move_px <= AUTO_THRESHOLD_PX:
                move = f"they move by {info.largest_move_px:.1f} px at most" if info.largest_move_px >= 0.05 else \
                    "no frame moves measurably"
                say(f"frames aligned ({move}): fused as they are")
                return info
            say(f"frames misaligned by up to {info.largest_move_px:.1f} px ({self.names[worst]}): registering "
                f"every frame to {self.names[self.reference]} (similarity; align=none fuses them as they are)")
            regs = self._refine(regs, "similarity")
            info.largest_move_px = max(displacement(r.matrix, (h, w)) for r in regs)
        else:
            say(f"registered every frame to {self.names[self.reference]} ({motion}; frames moved by up to "
                f"{info.largest_move_px:.1f} px)")
        self.registrations = regs  # type: ignore[assignment]
        info.motion = motion
        return info

    def _register(self, ref: Pyramid, pyr: Pyramid, motion: str, init: np.ndarray | None, i: int) -> Registration:
        """Register frame ``i``, starting from ``init`` (a neighbour's estimate) and, should that fail,
        from phase correlation; a one-line :class:`RegistrationError` naming the frame otherwise."""
        try:
            return register(ref, pyr, motion, init=init)
        except RegistrationError as e:
            if init is not None:
                try:
                    return register(ref, pyr, motion)
                except RegistrationError:
                    pass
            err = RegistrationError(
                f"{self.names[i]} cannot be registered to {self.names[self.reference]} ({motion}): {e}; check that "
                f"it belongs to this stack, pick a reference focused mid-stack (reference=K), or fuse "
                f"the frames as they are (align=none)")
            err.short = f"{self.names[i]}: {e}"  # type: ignore[attr-defined]
            err.reason = str(e)  # type: ignore[attr-defined]
            raise err from None

    def _blame(self, failed: list[RegistrationError], motion: str) -> RegistrationError:
        """The error for frames that could not be registered. A registration compares two frames, so
        its failure is the pair's: when every frame of a stack fails, the reference is the odd one
        out (a noise frame, say); in a pair neither is named as the culprit."""
        first, ref = failed[0], self.names[self.reference]
        if len(failed) < self.n - 1:
            return first  # other frames match the reference: this one is the odd one out
        reason = getattr(first, "reason", str(first))
        if self.n == 2:
            other = self.names[1 - self.reference]
            short = f"{other} and {ref} do not match: {reason}"
            msg = (f"{other} cannot be registered to {ref} ({motion}): {reason}; check that both belong to one "
                   "stack, or fuse them as they are (align=none)")
        else:
            short = f"no frame matches the reference {ref}: {reason}"
            msg = (f"no frame can be registered to the reference {ref} ({motion}): {reason}; check that {ref} "
                   "belongs to this stack, pick another reference (reference=K), or fuse the frames as they "
                   "are (align=none)")
        err = RegistrationError(msg)
        err.short = short  # type: ignore[attr-defined]
        return err

    def _refine(self, coarse: list[Registration], motion: str) -> list[Registration]:
        """Full-precision registration (levels up to ``MAX_SIDE``) from coarse estimates. Each frame
        starts from its own estimate, so frames are registered side by side, one per thread of
        ``torch.get_num_threads()`` (decoding, pyramids and ECC release the GIL; ECC's result does
        not depend on OpenCV's thread count), at the memory of one frame per thread."""
        ref, _ = self.load(self.reference)
        ref_pyr = Pyramid(luma(ref), MAX_SIDE)
        del ref

        def one(i: int) -> Registration:
            a, _ = self.load(i)
            pyr = Pyramid(luma(a), MAX_SIDE)
            del a
            return self._register(ref_pyr, pyr, motion, coarse[i].matrix, i)

        todo = [i for i in range(self.n) if i != self.reference]
        workers = max(1, min(len(todo), torch.get_num_threads()))
        out = list(coarse)
        if workers == 1:
            for i in todo:
                out[i] = one(i)
            return out
        cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # one ECC per thread: OpenCV's own pool would only contend with ours
        try:
            with ThreadPoolExecutor(workers) as pool:
                for i, reg in zip(todo, pool.map(one, todo)):  # the first failing frame raises, as in order
                    out[i] = reg
        finally:
            cv2.setNumThreads(cv2_threads)
        return out


def _valid_or_all(valid: np.ndarray | None, s: slice) -> np.ndarray | bool:
    return True if valid is None else valid[s]


def accumulate(frames: FrameReader, info: StackInfo, *, channels: int, frame_sum: bool, chroma: bool,
               evidence: Evidence | None = None
               ) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
    """Pass 1: the sum of the frames' network inputs ``[C, H, W]`` float64 (in [-1, 1] per frame;
    with ``frame_sum``) and the fused chroma ``(Cb, Cr)`` ``[H, W]`` float64 (with ``chroma``;
    frames count only where they cover the reference grid, grey frames not at all); each frame's
    luminance also goes to ``evidence`` (``rediffuse.evidence.Evidence``) when one is given."""
    h, w = info.height, info.width
    total = np.zeros((channels, h, w), np.float64) if frame_sum else None
    num = np.zeros((2, h, w), np.float64) if chroma else None
    den = np.zeros((2, h, w), np.float64) if chroma else None
    for i in range(frames.n):
        if not (frame_sum or (chroma and info.colour[i]) or evidence is not None):
            continue
        a, valid = frames.frame(i)
        if evidence is not None:
            evidence.add(luma(a), valid)
        if frame_sum:
            total += image_to_tensor(a, y_only=channels == 1).numpy()
        if chroma and a.ndim == 3:
            for s in strips(h):
                c = np.moveaxis(rgb_to_ycbcr(a[s])[..., 1:], -1, 0)
                wgt = np.abs(c - 128.0)
                if valid is not None:
                    wgt *= valid[s]
                num[:, s] += c * wgt
                den[:, s] += wgt
        del a, valid
    cbcr = None
    if chroma:
        out = np.full((2, h, w), 128.0)
        np.divide(num, den, out=out, where=den > 0)  # grey (128) where no frame has any colour
        cbcr = (out[0], out[1])
    return total, cbcr


class OnlineSoftmax:
    """``Σ_i softmax_i(z_i) · y_i`` over frames that arrive one at a time (z_i = l_i / τ), with the
    frame of the largest weight (``depth``) and, when ``keep`` names a folder, every z_i written
    there (one raw float32 file per frame, written and read back in row strips, never mapped, so
    it costs disk, not memory) for the weight maps. Memory: a few arrays of one frame's size."""

    def __init__(self, n: int, shape: tuple[int, int, int], *, numerator: bool = True, depth: bool = False,
                 keep: str | os.PathLike | None = None, value_channels: int | None = None,
                 exposure: ExposureBlend | None = None):
        self.n, self.shape = n, shape
        self.m = np.full(shape, _OUTSIDE, np.float32)
        self.d = np.zeros(shape, np.float32)
        # one logit channel may weight several value channels (a luminance model's weight map applied to R, G, B)
        vshape = (value_channels or shape[0], *shape[1:])
        # with exposure, the weights go also on each frame's values at a common exposure and on its
        # exposure (rediffuse.exposure)
        self.exposure = exposure if numerator else None
        self.num = np.zeros(vshape, np.float32) if numerator else None
        self.rel = np.zeros(vshape, np.float32) if self.exposure is not None else None
        self.gain = np.zeros(vshape, np.float32) if self.exposure is not None else None
        self._result = None
        self.best = np.full(shape[1:], -np.inf, np.float32) if depth else None
        self.index = np.zeros(shape[1:], np.uint16) if depth else None
        self.keep = Path(keep) if keep else None

    def add(self, i: int, logit: np.ndarray, y: np.ndarray | None = None, valid: np.ndarray | None = None,
            scale: float = 1.0, penalty: np.ndarray | None = None) -> None:
        """Frame ``i``'s logits ``[C, H, W]`` (z = ``scale`` · logit − ``penalty`` ``[H, W]``; and its
        values ``y``, same shape, or ``[3, H, W]`` under a one-channel logit), counted only where
        ``valid`` ``[H, W]`` (``None``: everywhere). Row strips keep the
        temporaries small (a 24-MP frame would otherwise need several full-size float copies)."""
        exposure = self.exposure.frame(y, valid) if self.rel is not None else None
        with contextlib.ExitStack() as files:
            kept = files.enter_context(open(self.keep / f"{i}.f32", "wb")) if self.keep else None
            for s in strips(self.shape[1]):
                z = np.asarray(logit[:, s], np.float32) * np.float32(scale)
                if penalty is not None:
                    z = z - penalty[None, s]
                if valid is not None:
                    z = np.where(valid[None, s], z, _OUTSIDE)
                if kept is not None:
                    self._keep(kept, z)
                m_new = np.maximum(self.m[:, s], z)
                rescale = np.exp(self.m[:, s] - m_new)  # ≤ 1: the earlier sums in the new maximum's units
                e = np.exp(z - m_new)
                self.d[:, s] = self.d[:, s] * rescale + e
                if self.num is not None:
                    self.num[:, s] = self.num[:, s] * rescale + e * y[:, s]
                if exposure is not None:
                    rel, gain = exposure.rows(y[:, s], s)
                    self.rel[:, s] = self.rel[:, s] * rescale + e * rel
                    self.gain[:, s] = self.gain[:, s] * rescale + e * gain
                self.m[:, s] = m_new
                if self.best is not None:
                    zc = z.mean(0)  # an RGB model has a logit per channel: the frame's weight is their mean
                    better = zc > self.best[s]
                    self.best[s][better] = zc[better]
                    self.index[s][better] = i

    def _keep(self, f, z: np.ndarray) -> None:
        """Append ``z`` to a kept-logits file; a full disk is one line naming the file (``ndarray.tofile``
        said only "20480 requested and 0 written")."""
        try:
            f.write(np.ascontiguousarray(z).data)
            f.flush()
        except OSError as e:
            folder = self.keep.parent
            reason = "the disk is full" if disk_full(e) else (e.strerror or str(e))
            err = OSError(f"cannot write {f.name}, the scratch file of a weight map: {reason}; the weight maps of "
                          f"{self.n} frames need about {self.n * 4 * int(np.prod(self.shape)) / 1e6:.3g} MB of scratch "
                          f"space in {folder}: free some there or name another folder with save_weights=DIR")
            err.errno = e.errno
            raise err from None

    def result(self) -> np.ndarray:
        """``[C, H, W]`` float32: the softmax-weighted sum of the ``y`` added (with ``exposure``: each
        frame's values at a common local exposure, ``ExposureBlend.finish``)."""
        if self.exposure is None:
            return self.num / self.d
        if self._result is None:  # in place, once: a stack of large frames has no memory to spare
            for s in strips(self.shape[1]):
                for x in (self.num, self.rel, self.gain):
                    x[:, s] /= self.d[:, s]
            self._result = self.exposure.finish(self.num, self.rel, self.gain)
            self.num, self.rel, self.gain = None, None, None
        return self._result

    def weight(self, i: int) -> np.ndarray:
        """Frame ``i``'s final weight ``[H, W]`` float32 in [0, 1] (mean over channels), from the kept logits."""
        c, h, w = self.shape
        out = np.empty((h, w), np.float32)
        with open(self.keep / f"{i}.f32", "rb") as f:
            for s in strips(h):
                z = np.fromfile(f, np.float32, c * (s.stop - s.start) * w).reshape(c, -1, w)
                out[s] = (np.exp(z - self.m[:, s]) / self.d[:, s]).mean(0)
        return out


def fuse_softmax(frames: FrameReader, logit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 total: np.ndarray, *, channels: int, tau: float = TAU, depth: bool = False,
                 keep: str | os.PathLike | None = None, rgb: bool = False, exposure: bool = False,
                 rest: Callable[[int, np.ndarray, np.ndarray | None], np.ndarray] | None = None) -> OnlineSoftmax:
    """Pass 2, order-independent: ``l_i = logit(Y_i, R_i)`` with ``R_i = (total − Y_i) / (N − 1)``
    (or ``rest(i, Y_i, valid_i)``, e.g. the best of the other frames)
    (``[1, C, H, W]`` tensors in [-1, 1]), accumulated as ``softmax_i(l_i / τ)``; returns the
    accumulator (``result()``: the fused ``[C, H, W]`` in [-1, 1], or ``[3, H, W]`` with ``rgb``: a
    luminance model's weights applied to each frame's R, G and B). A registered frame fades out
    towards the edge of its coverage (:func:`coverage_penalty`, over ``FEATHER`` of the longer side).
    ``exposure``: the frames blended at a common local exposure (``rediffuse.exposure``), so frames of
    different exposure leave no patches where the weights switch."""
    n = frames.n
    acc = OnlineSoftmax(n, total.shape, depth=depth, keep=keep, value_channels=3 if rgb else None,
                        exposure=ExposureBlend(total.shape[1:]) if exposure else None)
    feather = FEATHER * max(total.shape[1:])
    for i in range(n):
        a, valid = frames.frame(i)
        y = image_to_tensor(a, y_only=channels == 1)
        values = image_to_tensor(a, y_only=False).numpy() if rgb else None
        del a
        yn = y.numpy()
        if rest is None:
            ref = np.empty(y.shape, np.float32)
            for s in strips(y.shape[1]):  # the mean of the other frames, without a float64 copy of the frame
                ref[:, s] = (total[:, s] - yn[:, s]) / (n - 1)
        else:
            ref = rest(i, yn, valid)
        out = logit(y[None], torch.from_numpy(ref)[None])[0].cpu().numpy()
        del ref
        penalty = None if valid is None else coverage_penalty(valid, feather)
        acc.add(i, out, yn if values is None else values, valid, scale=1.0 / tau, penalty=penalty)
        del out, y, yn, valid, values, penalty
    return acc


def coverage_penalty(valid: np.ndarray, width: float) -> np.ndarray:
    """How much to lower a registered frame's logit (units of l/τ) near the edge of its coverage
    ``valid`` ``[H, W]`` bool: ``[H, W]`` float32, 0 at ``width`` px or more inside it, rising
    linearly to ``FEATHER_LOGIT`` at its edge (Euclidean distance to the nearest uncovered pixel; the
    border of the image is no edge). The frame so hands over to the others across a band instead of
    along its last row or column."""
    if valid.all() or width <= 0:
        return np.zeros(valid.shape, np.float32)
    d = cv2.distanceTransform(valid.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (np.float32(FEATHER_LOGIT) * np.clip(1 - d / np.float32(width), 0, 1)).astype(np.float32)


def _plain_pair(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *coverage) -> torch.Tensor:
    return w * x + (1 - w) * y


def fuse_fold(frames: FrameReader, pair: Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"],
              *, channels: int, depth: bool = False, keep: str | os.PathLike | None = None, rgb: bool = False,
              exposure: bool = False) -> tuple[torch.Tensor, OnlineSoftmax | None]:
    """Pass 2, pairwise: ``F = ((Y₁ ⊕ Y₂) ⊕ Y₃) ⊕ …`` with ``pair(F, Y_i) -> (fused, logit or None)``
    (the order of the frames matters). Where frame i does not cover the grid the fold keeps what it
    has. For two frames with a logit, also the weights ``σ(l)`` and ``1 − σ(l)`` (as a softmax over
    ``(l, 0)``) for the depth and weight maps. Returns ``([1, C, H, W]`` in [-1, 1], the weights or None);
    with ``rgb`` the fused image is ``[1, 3, H, W]``: every step's weight ``σ(l)`` applied to R, G and B
    (the network still sees the luminance). ``exposure``: every step blends its two inputs at a common
    local exposure (``rediffuse.exposure``; weight-map models)."""
    want = (depth or keep) and frames.n == 2
    fused, covered, acc, first_valid, fused_rgb = None, None, None, None, None
    for i in range(frames.n):
        a, valid = frames.frame(i)
        y = image_to_tensor(a, y_only=channels == 1)[None]
        y_rgb = image_to_tensor(a, y_only=False)[None] if rgb else None
        del a
        if fused is None:
            fused, covered, first_valid, fused_rgb = y, valid, valid, y_rgb
            continue
        out, logit = pair(fused, y.to(fused.device))
        if rgb and logit is None:
            raise ValueError("colour by weights needs a weight-map model (prediction 'weights')")
        if logit is not None and (rgb or exposure):
            wgt = torch.sigmoid(logit.float().to(out.device))
            blend = ExposureBlend(tuple(y.shape[-2:])).pair if exposure else _plain_pair
            if exposure and (not rgb or i < frames.n - 1):  # with rgb, the luminance only feeds the next step
                out = blend(wgt, fused.to(out.device), y.to(out.device), covered, valid)
            if rgb:
                y_rgb = y_rgb.to(out.device)
                out_rgb = blend(wgt, fused_rgb.to(out.device), y_rgb, covered, valid)
        if valid is not None or covered is not None:
            v = torch.from_numpy(valid if valid is not None else np.ones(y.shape[-2:], bool)).to(out.device)
            c = torch.from_numpy(covered if covered is not None else np.ones(y.shape[-2:], bool)).to(out.device)
            out = torch.where(v & c, out, torch.where(v, y.to(out.device), fused))
            if rgb:
                out_rgb = torch.where(v & c, out_rgb, torch.where(v, y_rgb, fused_rgb.to(out.device)))
            covered = None if bool((v | c).all()) else (v | c).cpu().numpy()
        fused = out
        if rgb:
            fused_rgb = out_rgb
        if want:
            if logit is None:
                raise ValueError("depth and weight maps need a weight-map model (prediction 'weights')")
            acc = OnlineSoftmax(2, tuple(logit.shape[1:]), numerator=False, depth=depth, keep=keep)
            acc.add(0, logit[0].cpu().numpy(), valid=first_valid)
            acc.add(1, np.zeros(tuple(logit.shape[1:]), np.float32), valid=valid)
    return (fused_rgb if rgb else fused), acc
