"""Pure-PyTorch reference of the rotation ops (torch only: loadable without meshrec)."""

from __future__ import annotations

import torch

__all__ = ["rodrigues"]

# Squared angles below which the closed forms are replaced by Taylor series (as the kernels do).
_SMALL_SQUARED_ANGLE = {torch.float32: 1e-2, torch.float64: 1e-4}


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) in radians -> rotation matrices (..., 3, 3); see ``meshrec.rotations.rodrigues``."""
    w = axis_angle
    s = (w * w).sum(-1, keepdim=True)
    small = s < _SMALL_SQUARED_ANGLE.get(w.dtype, 1e-2)
    # The closed form is evaluated on a safe value where the series is used, so that neither
    # branch produces NaN (torch.where would propagate a NaN gradient from the unused branch).
    s_safe = torch.where(small, torch.ones_like(s), s)
    t = s_safe.sqrt()
    a_closed = torch.sin(t) / t
    b_closed = 2 * torch.sin(t / 2) ** 2 / s_safe
    a_series = 1 - s / 6 + s**2 / 120 - s**3 / 5040
    b_series = 0.5 - s / 24 + s**2 / 720 - s**3 / 40320
    a = torch.where(small, a_series, a_closed)
    b = torch.where(small, b_series, b_closed)
    cos_t = 1 - s * b
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))
    outer = w.unsqueeze(-1) * w.unsqueeze(-2)
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    return cos_t.unsqueeze(-1) * eye + a.unsqueeze(-1) * skew + b.unsqueeze(-1) * outer
