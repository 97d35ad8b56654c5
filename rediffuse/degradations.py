"""Linear degradation operators A with pseudo-inverses A⁺, for observation-consistent sampling.

Every operator acts on tensors [B, C, H, W], each channel independently, and provides

- ``A(x)``        the degradation (shape [B, C, h, w], h = H/f for downsampling, else H),
- ``A_pinv(y)``   its Moore–Penrose pseudo-inverse (back to [B, C, H, W]),
- ``degrade(x, sigma_y, generator)``  y = A x + σ_y·n, n ~ N(0, I) drawn from ``generator``.

A⁺ satisfies A A⁺ A = A, so :func:`range_null_correction` with λ = 1 makes the estimate agree with
any observation y in the range of A exactly (DDNM: x ← x − λ A⁺(A x − y) replaces the range-space
part of x by A⁺y and keeps its null-space part). ``rediffuse.restore`` uses it for DRFusion-style
sampling of degraded sources, with :func:`fusion_constraint` joining the per-source estimates.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .bases import keys_cubic

__all__ = [
    "Degradation",
    "Identity",
    "GaussianBlur",
    "AvgPoolDown",
    "BicubicDown",
    "DEGRADATIONS",
    "get_degradation",
    "range_null_correction",
    "fusion_constraint",
]


def _check_4d(x: Tensor, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} must be [B, C, H, W], got shape {tuple(x.shape)}")


class Degradation:
    """Base class: subclasses implement ``A`` and ``A_pinv``."""

    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def A_pinv(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        return self.A(x)

    def degrade(self, x: Tensor, sigma_y: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """y = A x + σ_y n with n ~ N(0, I) (drawn on the generator's device, then moved)."""
        y = self.A(x)
        if sigma_y > 0:
            gdev = generator.device if generator is not None else y.device
            n = torch.randn(y.shape, generator=generator, device=gdev, dtype=y.dtype).to(y.device)
            y = y + sigma_y * n
        return y


class Identity(Degradation):
    """A = I (the observation is the image plus noise); A⁺ = I."""

    def A(self, x: Tensor) -> Tensor:
        _check_4d(x, "x")
        return x

    def A_pinv(self, y: Tensor) -> Tensor:
        _check_4d(y, "y")
        return y

    def __repr__(self) -> str:
        return "Identity()"


class GaussianBlur(Degradation):
    """Circular (periodic) Gaussian blur, diagonal in the 2-D DFT, so A⁺ is exact in Fourier space.

    The kernel is the sampled Gaussian exp(−d²/2σ²) over the whole torus (d = wrapped distance),
    normalised to sum 1; its transfer function K is real and separable. Frequencies with |K| ≤ eps
    are treated as annihilated: A = F⁻¹[K·1{|K|>eps}]F and A⁺ = F⁻¹[1{|K|>eps}/K]F. This differs from
    the untruncated blur by at most eps in operator norm and makes A⁺ the exact Moore–Penrose
    inverse (A A⁺ A = A, A⁺ A A⁺ = A⁺). Larger eps = less noise amplification by A⁺.
    """

    def __init__(self, sigma: float, eps: float = 1e-3):
        if sigma <= 0:
            raise ValueError("sigma must be > 0")
        self.sigma = float(sigma)
        self.eps = float(eps)
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma}, eps={self.eps})"

    def _transfer_1d(self, n: int) -> Tensor:
        i = torch.arange(n, dtype=torch.float64)
        d = torch.minimum(i, n - i)
        k = torch.exp(-(d**2) / (2 * self.sigma**2))
        k = k / k.sum()
        return torch.fft.fft(k).real  # even kernel → real spectrum

    def _spectra(self, H: int, W: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (H, W, device, dtype)
        if key not in self._cache:
            kh = self._transfer_1d(H)
            kw = self._transfer_1d(W)[: W // 2 + 1]  # rfft half-plane
            K = kh[:, None] * kw[None, :]
            keep = K.abs() > self.eps
            K_a = torch.where(keep, K, torch.zeros_like(K))
            K_inv = torch.where(keep, 1.0 / torch.where(keep, K, torch.ones_like(K)), torch.zeros_like(K))
            self._cache[key] = (K_a.to(device, dtype), K_inv.to(device, dtype))
        return self._cache[key]

    def _apply(self, x: Tensor, which: int) -> Tensor:
        H, W = x.shape[-2:]
        spec = self._spectra(H, W, x.device, x.dtype)[which]
        return torch.fft.irfft2(torch.fft.rfft2(x) * spec, s=(H, W))

    def A(self, x: Tensor) -> Tensor:
        _check_4d(x, "x")
        return self._apply(x, 0)

    def A_pinv(self, y: Tensor) -> Tensor:
        _check_4d(y, "y")
        return self._apply(y, 1)

    def wiener(self, y: Tensor, nsr: float) -> Tensor:
        """Wiener deconvolution F⁻¹[K/(K² + nsr)]F y with a constant noise-to-signal power ratio
        ``nsr`` > 0 (the classical restorer; ``nsr`` → 0 approaches A⁺). y: [B, C, H, W]."""
        _check_4d(y, "y")
        if nsr <= 0:
            raise ValueError("nsr must be > 0 (use A_pinv for the plain inverse)")
        H, W = y.shape[-2:]
        K = self._spectra(H, W, y.device, y.dtype)[0]
        return torch.fft.irfft2(torch.fft.rfft2(y) * (K / (K * K + nsr)), s=(H, W))


def _check_divisible(x: Tensor, factor: int, name: str) -> None:
    H, W = x.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(
            f"{name}: image size {H}x{W} is not divisible by factor {factor}; "
            f"crop or pad to a multiple of {factor} first"
        )


class AvgPoolDown(Degradation):
    """A = f×f average pooling; A⁺ = replication upsampling (A A⁺ = I, since A Aᵀ = I/f²)."""

    def __init__(self, factor: int):
        if int(factor) != factor or factor < 1:
            raise ValueError("factor must be a positive integer")
        self.factor = int(factor)

    def __repr__(self) -> str:
        return f"AvgPoolDown(factor={self.factor})"

    def A(self, x: Tensor) -> Tensor:
        _check_4d(x, "x")
        _check_divisible(x, self.factor, "AvgPoolDown")
        return F.avg_pool2d(x, self.factor)

    def A_pinv(self, y: Tensor) -> Tensor:
        _check_4d(y, "y")
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


def _bicubic_down_matrix(n: int, factor: int) -> Tensor:
    """[n/f, n] float64 matrix of antialiased bicubic downsampling by ``factor`` along one axis.

    Like MATLAB ``imresize(…, 1/f)``: output pixel i sits at input coordinate (i + ½)f − ½, the
    kernel is stretched by f (antialiasing), weights are normalised to sum 1, and taps that fall
    outside the image are reflected symmetrically (edge pixel repeated).
    """
    m = n // factor
    D = torch.zeros(m, n, dtype=torch.float64)
    half = 2 * factor  # support of the stretched kernel
    for i in range(m):
        u = (i + 0.5) * factor - 0.5
        j = torch.arange(math.floor(u - half), math.ceil(u + half) + 1)
        w = keys_cubic((u - j.to(torch.float64)) / factor)  # a = −0.5, as MATLAB imresize
        w = w / w.sum()
        jj = torch.remainder(j, 2 * n)
        jj = torch.where(jj >= n, 2 * n - 1 - jj, jj)
        D[i].index_add_(0, jj, w)
    return D


class BicubicDown(Degradation):
    """A = separable antialiased bicubic downsampling by an integer ``factor``: A x = D_H x D_Wᵀ.

    A⁺ = D_H⁺ y (D_W⁺)ᵀ with D⁺ = Dᵀ(DDᵀ)⁻¹ the least-squares pseudo-inverse of each 1-D matrix
    (computed once per size in float64 by SVD); the Kronecker structure makes this the exact
    Moore–Penrose inverse of A, and A A⁺ = I because D has full row rank.
    """

    def __init__(self, factor: int):
        if int(factor) != factor or factor < 1:
            raise ValueError("factor must be a positive integer")
        self.factor = int(factor)
        self._mats: dict = {}

    def __repr__(self) -> str:
        return f"BicubicDown(factor={self.factor})"

    def _matrices(self, n: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (n, device, dtype)
        if key not in self._mats:
            D = _bicubic_down_matrix(n, self.factor)
            D_pinv = torch.linalg.pinv(D)
            self._mats[key] = (D.to(device, dtype), D_pinv.to(device, dtype))
        return self._mats[key]

    def A(self, x: Tensor) -> Tensor:
        _check_4d(x, "x")
        _check_divisible(x, self.factor, "BicubicDown")
        H, W = x.shape[-2:]
        Dh, _ = self._matrices(H, x.device, x.dtype)
        Dw, _ = self._matrices(W, x.device, x.dtype)
        return Dh @ x @ Dw.T

    def A_pinv(self, y: Tensor) -> Tensor:
        _check_4d(y, "y")
        h, w = y.shape[-2:]
        _, Ph = self._matrices(h * self.factor, y.device, y.dtype)
        _, Pw = self._matrices(w * self.factor, y.device, y.dtype)
        return Ph @ y @ Pw.T


DEGRADATIONS: dict[str, Callable[..., Degradation]] = {
    "identity": Identity,
    "blur": GaussianBlur,
    "avgpool": AvgPoolDown,
    "bicubic": BicubicDown,
}


def get_degradation(name: str, **kwargs) -> Degradation:
    """Operator by name: ``identity``, ``blur`` (sigma, eps), ``avgpool`` (factor), ``bicubic`` (factor)."""
    try:
        cls = DEGRADATIONS[name]
    except KeyError:
        raise ValueError(f"unknown degradation {name!r}; available: {sorted(DEGRADATIONS)}") from None
    return cls(**kwargs)


def range_null_correction(x0_hat: Tensor, y: Tensor, op: Degradation, lam: float | Tensor = 1.0) -> Tensor:
    """x̂0 − λ A⁺(A x̂0 − y): with λ = 1 and y in the range of A, A(result) = y exactly.
    x0_hat: [B, C, H, W]; y: shaped like A(x0_hat); lam: float or broadcastable tensor (DDNM+ λ_t)."""
    return x0_hat - lam * op.A_pinv(op.A(x0_hat) - y)


def fusion_constraint(x_a: Tensor, x_b: Tensor, m: Tensor | float) -> Tensor:
    """m·x_a + (1 − m)·x_b; m (e.g. a weight map [B, 1, H, W] in [0, 1]) broadcasts over channels."""
    return m * x_a + (1 - m) * x_b
