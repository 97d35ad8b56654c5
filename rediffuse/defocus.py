"""The layered (alpha-matte) defocus model: realistic synthetic focus stacks from one sharp photo.

A mask blend ``M·I + (1 − M)·blur(I)`` never lets a blurred *foreground* spread over the sharp
background behind it, as a real lens does; a network trained on it leaves halos at focus
boundaries. Here a scene is a stack of depth layers with soft mattes ``m_l`` (``Σ_l m_l = 1``, layer 0
nearest), each blurred by its own PSF ``h_{n,l}`` in frame ``n`` and composited back to front:

    T_far = h * (m_far · I) / (h * m_far)          (normalised convolution: the farthest layer seen
                                                   through nothing, its hidden part filled by I)
    C ← h_l * (m_l · I) + (1 − h_l * m_l) · C      (every nearer layer occludes what is behind)

With two layers (foreground matte α) this is exactly
``S_near = α·I + (1 − α)·B̃`` (``B̃`` the background blurred from background pixels only) and
``S_far = h * (α·I) + (1 − h * α)·I``. Blurring happens in linear light (a 2.2 power), so bright
points spread as they do through a lens.

The radius of layer ``l`` in frame ``n`` follows the thin lens: ``r = K·|u_l − u_n|`` with ``u`` the
inverse depth (dioptres) of the layer and of the frame's focus. All tensors are batched and every
convolution is one FFT, so a training batch is rendered in milliseconds.

Shapes: images ``[B, C, H, W]`` in [0, 1]; mattes ``[B, L, H, W]``; radii ``[B, N, L]``; a rendered
stack ``[B, N, C, H, W]``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GAMMA", "psf_bank", "render_stack", "sharpest_frame", "composite_ground_truth",
           "soft_layers", "boundary_band"]

#: Display gamma used to go to linear light and back (sRGB is close to a 2.2 power).
GAMMA = 2.2


def psf_bank(radii: Tensor, size: tuple[int, int], kind: Tensor | str = "disk") -> Tensor:
    """Centred, normalised PSFs on an ``size`` grid: ``[..., H, W]`` for radii ``[...]`` (pixels).

    ``kind``: ``"disk"`` (anti-aliased pillbox of radius r, geometric-optics defocus), ``"gaussian"``
    (σ = r/2, a diffraction-softened lens), or a bool tensor like ``radii`` (True = disk). r = 0 is
    a delta. The PSF is stored with its centre at index ``(H//2, W//2)``.
    """
    h, w = size
    dev, dt = radii.device, radii.dtype
    y = torch.arange(h, device=dev, dtype=dt) - h // 2
    x = torch.arange(w, device=dev, dtype=dt) - w // 2
    d = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)  # [H, W]
    r = radii[..., None, None]
    disk = (r + 0.5 - d).clamp(0, 1)
    sigma = (r / 2).clamp_min(1e-3)
    gauss = torch.exp(-0.5 * (d / sigma) ** 2)
    if isinstance(kind, str):
        if kind not in ("disk", "gaussian"):
            raise ValueError(f"unknown PSF kind {kind!r}; choose 'disk' or 'gaussian'")
        k = disk if kind == "disk" else gauss
    else:
        k = torch.where(kind[..., None, None], disk, gauss)
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    return k


def _fft_conv(x: Tensor, k_hat: Tensor) -> Tensor:
    """Circular convolution of ``x [..., H, W]`` with PSFs given by their rfft2 (centred kernels)."""
    h, w = x.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(x) * k_hat, s=(h, w))


def soft_layers(labels: Tensor, n_layers: int, softness: Tensor) -> Tensor:
    """Soft mattes ``[B, L, H, W]`` (summing to 1) from integer layer labels ``[B, H, W]``.

    Each indicator is blurred with a Gaussian of σ = ``softness`` ``[B]`` pixels (anti-aliased,
    slightly feathered object edges) and the stack renormalised.
    """
    one_hot = F.one_hot(labels.long(), n_layers).permute(0, 3, 1, 2).to(torch.float32)
    B, L, H, W = one_hot.shape
    radius = int(math.ceil(3 * float(softness.max()))) if softness.numel() else 0
    if radius == 0:
        return one_hot
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=labels.device)
    g = torch.exp(-0.5 * (t[None] / softness[:, None].clamp_min(1e-3)) ** 2)  # [B, K]
    g = g / g.sum(1, keepdim=True)
    x = one_hot.reshape(1, B * L, H, W)
    gk = g.repeat_interleave(L, 0)  # [B*L, K]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), gk[:, None, None, :], groups=B * L)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), gk[:, None, :, None], groups=B * L)
    x = x.reshape(B, L, H, W).clamp_min(0)
    return x / x.sum(1, keepdim=True).clamp_min(1e-6)


def render_stack(image: Tensor, mattes: Tensor, radii: Tensor, disk: Tensor | bool = True,
                 linear_light: bool = True) -> Tensor:
    """Render a focus stack ``[B, N, C, H, W]`` in [0, 1] with the layered defocus model.

    ``image`` ``[B, C, H, W]`` all-in-focus in [0, 1]; ``mattes`` ``[B, L, H, W]`` (layer 0 nearest,
    summing to 1 over L); ``radii`` ``[B, N, L]`` blur radius of layer l in frame n (0 = in focus);
    ``disk`` ``[B, N]`` bool (True: disk PSF, False: Gaussian) or one bool for all.

    Convolutions are circular (FFT): give the image a margin of at least the largest radius and
    crop it off afterwards.
    """
    if image.ndim != 4 or mattes.ndim != 4 or radii.ndim != 3:
        raise ValueError("render_stack expects image [B, C, H, W], mattes [B, L, H, W], radii [B, N, L]")
    B, C, H, W = image.shape
    L = mattes.shape[1]
    N = radii.shape[1]
    if mattes.shape != (B, L, H, W) or radii.shape != (B, N, L):
        raise ValueError(f"shape mismatch: image {tuple(image.shape)}, mattes {tuple(mattes.shape)}, "
                         f"radii {tuple(radii.shape)}")
    lin = image.clamp(0, 1) ** GAMMA if linear_light else image
    kind = torch.as_tensor(disk, device=image.device).expand(B, N)
    psf = psf_bank(radii.to(torch.float32), (H, W), kind[..., None].expand(B, N, L))  # [B, N, L, H, W]
    k_hat = torch.fft.rfft2(torch.fft.ifftshift(psf, dim=(-2, -1)))  # [B, N, L, H, W//2+1]
    # premultiplied colour and coverage of every layer: [B, 1, L, C+1, H, W] -> per frame
    prem = torch.cat([mattes[:, :, None] * lin[:, None], mattes[:, :, None]], dim=2)  # [B, L, C+1, H, W]
    blurred = _fft_conv(prem[:, None], k_hat[:, :, :, None])  # [B, N, L, C+1, H, W]
    colour, cover = blurred[:, :, :, :C], blurred[:, :, :, C:].clamp(0, 1)
    # farthest layer: normalised convolution; where it has no support at all (deep inside nearer
    # layers that cover it completely anyway) fall back to the photo itself
    far_c, far_a = colour[:, :, -1], cover[:, :, -1]
    trust = (far_a / 0.05).clamp(0, 1)
    out = trust * far_c / far_a.clamp_min(1e-4) + (1 - trust) * lin[:, None]
    for layer in range(L - 2, -1, -1):
        out = colour[:, :, layer] + (1 - cover[:, :, layer]) * out
    out = out.clamp(0, 1)
    return out ** (1 / GAMMA) if linear_light else out


def sharpest_frame(radii: Tensor) -> Tensor:
    """Index of the frame that sees each layer sharpest: ``[B, L]`` from radii ``[B, N, L]``."""
    return radii.argmin(dim=1)


def composite_ground_truth(image: Tensor, mattes: Tensor, radii: Tensor, gains: Tensor) -> Tensor:
    """The all-in-focus target ``[B, C, H, W]`` in the exposure of the frame that is sharpest there.

    A fusion that copies in-focus pixels reproduces each region with that frame's exposure, so the
    target applies per layer the gain ``gains`` ``[B, N]`` of its sharpest frame:
    ``GT = clip(I · Σ_l m_l · g_{argmin_n r_{n,l}})``.
    """
    best = sharpest_frame(radii)  # [B, L]
    g = torch.gather(gains, 1, best)  # [B, L]
    gain_map = (mattes * g[:, :, None, None]).sum(1, keepdim=True)  # [B, 1, H, W]
    return (image * gain_map).clamp(0, 1)


def boundary_band(mattes: Tensor, width: int = 15) -> Tensor:
    """Pixels within ``width`` px of a focus boundary (the 0.5 level set of any layer's matte):
    bool ``[B, H, W]``. Used to score boundary quality on synthetic pairs."""
    hard = mattes.argmax(1)  # [B, H, W]
    edge = torch.zeros_like(hard, dtype=torch.bool)
    edge[:, 1:, :] |= hard[:, 1:, :] != hard[:, :-1, :]
    edge[:, :-1, :] |= hard[:, 1:, :] != hard[:, :-1, :]
    edge[:, :, 1:] |= hard[:, :, 1:] != hard[:, :, :-1]
    edge[:, :, :-1] |= hard[:, :, 1:] != hard[:, :, :-1]
    k = 2 * width + 1
    yy, xx = torch.meshgrid(torch.arange(k) - width, torch.arange(k) - width, indexing="ij")
    disk = ((yy ** 2 + xx ** 2) <= width ** 2).to(torch.float32)
    grown = F.conv2d(edge[:, None].to(torch.float32), disk[None, None], padding=width)
    return grown[:, 0] > 0
