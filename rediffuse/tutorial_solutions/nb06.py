"""Notebook 06 (ablations): count a B-Conv's parameters by hand, and predict what turning (or
mirroring) the input does to the output of a Rot-E network and of its plain twin."""
from __future__ import annotations

from typing import Callable

import torch

from ..groups import rotate_image
from ..layers import Plain, RotE
from ..unet import ReDiffuseUNet, count_parameters
from ._core import ExerciseError, grader, reference

__all__ = ["conv_parameters", "predict_turned_output", "check_conv_parameters", "check_predict_turned_output",
           "turn_or_mirror"]


@reference
def conv_parameters(in_fields: int, out_fields: int, m: int, kernel_size: int) -> dict[str, int]:
    """Trainable parameters of a hidden Rot-E conv (B-Conv basis with one control point per filter tap,
    so ``kernel_size²`` weights per filter) from ``in_fields`` to ``out_fields`` fields of C_m, and of
    the plain conv of equal width (``in_fields·m`` → ``out_fields·m`` channels). Both with bias.
    Returns ``{"rote": int, "plain": int}``."""
    taps = kernel_size * kernel_size
    rote = out_fields * in_fields * m * taps + out_fields  # one filter per (out field, in field, in orientation); a bias per field
    plain = (out_fields * m) * (in_fields * m) * taps + out_fields * m  # every channel pair its own filter; a bias per channel
    return {"rote": rote, "plain": plain}


@reference
def predict_turned_output(output: torch.Tensor, k: int, flip: bool, equivariant: bool) -> torch.Tensor | None:
    """What a network gives for its inputs turned by ``k`` quarter turns (counter-clockwise, as
    ``torch.rot90`` on dims (-2, -1)) and then, if ``flip``, mirrored left–right, predicted from its
    output ``[B, C, H, W]`` (an image: a weight map or a fused image) on the upright inputs — or
    ``None`` where the network gives no guarantee. ``equivariant``: a C4 Rot-E network (rotations
    only: a mirror is not in C4) rather than its plain twin."""
    if k % 4 == 0 and not flip:
        return output  # the inputs did not change
    if equivariant and not flip:
        return torch.rot90(output, k, dims=(-2, -1))
    return None


def turn_or_mirror(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """``x`` ``[..., H, W]`` turned by ``k`` quarter turns, then mirrored left–right if ``flip``."""
    x = rotate_image(x, k)
    return torch.flip(x, dims=(-1,)) if flip else x


_PARAM_CASES = [(2, 3, 4, 3), (4, 4, 4, 5), (1, 2, 8, 3), (3, 1, 8, 5)]


def _measured_counts(i: int, o: int, m: int, p: int) -> dict[str, int]:
    return {"rote": count_parameters(RotE(m, "bconv").conv(i, o, p)), "plain": count_parameters(Plain(m).conv(i, o, p))}


@grader()
def check_conv_parameters(fn: Callable) -> str:
    """``fn(in_fields, out_fields, m, kernel_size)`` against the layers ``rediffuse.layers`` builds."""
    for i, o, m, p in _PARAM_CASES:
        got = fn(i, o, m, p)
        where = f"in_fields={i}, out_fields={o}, m={m}, kernel_size={p}"
        if not isinstance(got, dict) or set(got) != {"rote", "plain"}:
            raise ExerciseError(f"{where}: return a dict with the keys 'rote' and 'plain', got {got!r}")
        want = _measured_counts(i, o, m, p)
        taps = p * p
        r, pl = got["rote"], got["plain"]
        if r != want["rote"]:
            weights = o * i * m * taps
            if r == weights:
                hint = f"the weights are right ({weights}) but the bias is missing: one value per output field"
            elif r == weights + o * m:
                hint = ("a bias per channel breaks equivariance: a Rot-E conv has one bias per output *field*, "
                        "shared by its m orientations")
            elif r in (o * i * taps + o, o * i * taps):
                hint = ("a hidden Rot-E conv reads all m orientations of each input field: one learned filter per "
                        "(output field, input field, input orientation), i.e. a factor m you left out")
            elif r in (o * m * i * m * taps + o, o * m * i * m * taps + o * m):
                hint = ("that is the plain count: the m rotated copies of a filter are computed from one learned "
                        "filter, not learned again (divide the filters by m)")
            else:
                hint = f"a Rot-E conv has {want['rote']} parameters here, you counted {r}"
            raise ExerciseError(f"{where}, Rot-E: {hint}")
        if pl != want["plain"]:
            weights = o * m * i * m * taps
            if pl == weights:
                hint = f"the weights are right ({weights}) but nn.Conv2d also has a bias per output channel ({o * m})"
            elif pl in (o * i * taps + o, o * i * taps + o * m, o * i * m * taps + o * m):
                hint = ("the plain twin has the same channel widths: out_fields·m output channels and in_fields·m "
                        "input channels, and every pair of channels has its own p×p filter")
            else:
                hint = f"the plain conv has {want['plain']} parameters here, you counted {pl}"
            raise ExerciseError(f"{where}, plain: {hint}")
    i, o, m, p = _PARAM_CASES[0]
    want = _measured_counts(i, o, m, p)
    return (f"correct: your counts match the layers in all {len(_PARAM_CASES)} cases (e.g. {want['rote']} against "
            f"{want['plain']} for {i}→{o} fields, m = {m}, {p}×{p}: ratio {want['rote'] / want['plain']:.3f} = 1/m, "
            "since weights and biases both shrink by m)")


_TURN_CASES = [(0, False), (1, False), (2, False), (3, False), (0, True), (1, True)]


def _tiny_unets(seed: int = 0) -> dict[bool, ReDiffuseUNet]:
    nets = {}
    for equivariant in (True, False):
        torch.manual_seed(seed)
        nets[equivariant] = ReDiffuseUNet(in_channels=3, out_channels=1, base=8, mults=(1, 2), groups=2,
                                          conv="bconv" if equivariant else "plain", dropout=0.0).eval()
    return nets


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / (b.norm() + 1e-12))


@grader()
@torch.no_grad()
def check_predict_turned_output(fn: Callable) -> str:
    """``fn(output, k, flip, equivariant)`` against what a Rot-E U-Net and its plain twin (random
    weights, small) actually give for turned and mirrored inputs."""
    gen = torch.Generator().manual_seed(6)
    x, cond = torch.randn(1, 1, 28, 28, generator=gen), torch.randn(1, 2, 28, 28, generator=gen)
    t = torch.tensor([700])
    measured = {}
    for equivariant, net in _tiny_unets().items():
        name = "the Rot-E network" if equivariant else "the plain twin"
        upright = net(x, t, cond)
        for k, flip in _TURN_CASES:
            actual = net(turn_or_mirror(x, k, flip), t, turn_or_mirror(cond, k, flip))
            what = f"{name}, inputs turned {90 * k}°" + (" and mirrored" if flip else "")
            got = fn(upright.clone(), k, flip, equivariant)
            guaranteed = predict_turned_output(upright, k, flip, equivariant)
            if guaranteed is not None:
                measured[(equivariant, k, flip)] = _rel(guaranteed, actual)
            else:
                measured[(equivariant, k, flip)] = _rel(turn_or_mirror(upright, k, flip), actual)
            if guaranteed is None:
                if got is not None:
                    err = _rel(got, actual) if isinstance(got, torch.Tensor) and got.shape == actual.shape else None
                    off = f" (your prediction is {err:.0%} off)" if err is not None else ""
                    why = ("C4 holds rotations only, and a mirror is not one of them: nothing ties the mirrored "
                           "output to the upright one" if flip and equivariant else
                           "nothing in a plain CNN ties the output for turned inputs to the upright output")
                    raise ExerciseError(f"{what}: {why}{off}; return None")
                continue
            if got is None:
                if k % 4 == 0 and not flip:
                    raise ExerciseError(f"{what}: the inputs did not change, so any network gives the same output: "
                                        "return it")
                raise ExerciseError(f"{what}: a Rot-E network is exactly equivariant to quarter turns, so its output "
                                    "can be predicted (measured: it differs from the turned upright output by "
                                    f"{_rel(guaranteed, actual):.1e}, float round-off)")
            if not isinstance(got, torch.Tensor) or got.shape != actual.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise ExerciseError(f"{what}: expected a tensor shaped like the output {tuple(actual.shape)}, got {shape}")
            err = _rel(got, actual)
            if err <= 1e-4:
                continue
            if _rel(got, rotate_image(upright, -k)) <= 1e-6:
                hint = ("you turned the output the other way: the inputs were turned counter-clockwise "
                        "(torch.rot90 with k > 0), and the output turns with them")
            elif _rel(got, upright) <= 1e-6:
                hint = ("the output is an image over the same pixels as the inputs: it turns with them "
                        "(equivariant), it does not stay as it was (invariant)")
            else:
                hint = f"your prediction is {err:.1%} off what the network gives"
            raise ExerciseError(f"{what}: {hint}")
    plain90, rote90 = measured[(False, 1, False)], measured[(True, 1, False)]
    mirror = measured[(True, 0, True)]
    return (f"correct: for quarter turns the Rot-E output is the turned upright output ({rote90:.1e} relative, "
            f"round-off); the plain twin's differs by {plain90:.0%} at 90°, and the Rot-E network's own mirrored "
            f"output differs from the mirrored upright one by {mirror:.0%}")
