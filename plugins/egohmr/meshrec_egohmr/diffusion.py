"""EgoHMR's Gaussian diffusion (``diffusion/gaussian_diffusion.py``, ``respace.py``,
``model_util.py``): a 50-step cosine schedule, a model that predicts x0, posterior ("fixed
small") variances, DDPM ancestral sampling and DDIM (eta = 0) over respaced steps, and the
collision-score guidance of the last steps.

Respacing names (``timestep_respacing``): ``"ddpm"`` keeps all 50 steps; ``"ddimN"`` keeps the
DDIM paper's fixed stride giving N steps (``"ddim5"``: steps 0, 10, 20, 30, 40, so sampling
starts at t = 40, not 49, as upstream) and samples with DDIM; a comma-separated list of counts
(``"10"``, ``"5,5"``) strides sections evenly and samples with DDPM.

All schedule arithmetic is float64 (numpy upstream); the per-step coefficients are applied in
the dtype of the sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Diffusion", "Generators", "cosine_betas", "normal", "space_timesteps"]

NUM_STEPS = 50

# One generator for the whole batch, or one per group of rows (e.g. one per person, whose S
# samples are consecutive rows): then each group's draws depend on its own generator only, so
# results do not depend on how the inputs were batched or sharded.
Generators = torch.Generator | list[torch.Generator] | tuple[torch.Generator, ...] | None


def normal(shape: tuple[int, ...], generator: Generators, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Standard normal draws of ``shape`` on ``device``, made on the generator's device.

    ``generator`` may be a list of G generators: the leading dimension is split into G equal
    consecutive groups, group g drawn from generator g."""
    if isinstance(generator, (list, tuple)):
        if shape[0] % len(generator):
            raise ValueError(f"{shape[0]} rows cannot be split among {len(generator)} generators")
        rows = (shape[0] // len(generator), *shape[1:])
        return torch.cat([torch.randn(rows, generator=g, dtype=dtype, device=g.device).to(device) for g in generator])
    return torch.randn(shape, generator=generator, dtype=dtype,
                       device="cpu" if generator is None else generator.device).to(device)


def cosine_betas(num_steps: int = NUM_STEPS, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta)
    with abar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2. (num_steps,) float64."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
                         for i in range(num_steps)], dtype=torch.float64)


def space_timesteps(num_steps: int, section_counts: str | list[int]) -> set[int]:
    """The steps of the original process a respaced sampler keeps (guided-diffusion's
    ``space_timesteps``): ``"ddimN"`` -> ``range(0, num_steps, stride)`` with the first integer
    stride giving exactly N steps; a list (or comma-separated string) of counts strides equal
    sections of the process."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_steps):
                if len(range(0, num_steps, stride)) == desired:
                    return set(range(0, num_steps, stride))
            raise ValueError(f"cannot take exactly {desired} of {num_steps} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_steps, len(section_counts))
    start, steps = 0, []
    for index, count in enumerate(section_counts):
        size = size_per + (1 if index < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            steps.append(start + round(position))
            position += stride
        start += size
    return set(steps)


@dataclass
class Diffusion:
    """A respaced diffusion process and its samplers.

    Attributes (float64 tensors over the kept steps, index i = respaced step):
        timestep_map: (K,) original step of each respaced step (what the denoiser is given).
        betas, alphas_cumprod, alphas_cumprod_prev, posterior_variance,
        posterior_log_variance_clipped, posterior_mean_coef1, posterior_mean_coef2.
        ddim: whether :meth:`sample` runs DDIM (eta = 0) instead of DDPM.
    """

    timestep_map: torch.Tensor
    betas: torch.Tensor
    ddim: bool

    @classmethod
    def create(cls, timestep_respacing: str = "ddpm", num_steps: int = NUM_STEPS) -> "Diffusion":
        """``"ddpm"`` (all steps, ancestral), ``"ddimN"`` (N strided steps, DDIM) or section
        counts (DDPM on strided steps)."""
        if not isinstance(timestep_respacing, str) or not timestep_respacing:
            raise ValueError(f"timestep_respacing must be 'ddpm', 'ddimN' or section counts, got {timestep_respacing!r}")
        base = cosine_betas(num_steps)
        if timestep_respacing == "ddpm":
            kept = set(range(num_steps))
        else:
            try:
                kept = space_timesteps(num_steps, timestep_respacing)
            except ValueError as error:
                raise ValueError(f"timestep_respacing {timestep_respacing!r}: {error}") from None
        alphas_cumprod = torch.cumprod(1 - base, 0)
        last, betas, mapping = 1.0, [], []
        for index in range(num_steps):
            if index in kept:
                betas.append(1 - alphas_cumprod[index] / last)
                last = alphas_cumprod[index]
                mapping.append(index)
        return cls(torch.tensor(mapping), torch.stack(betas).double(), timestep_respacing.startswith("ddim"))

    def __post_init__(self) -> None:
        betas = self.betas
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        # clipped: the variance of step 0 is 0, its log uses step 1's value
        self.posterior_log_variance_clipped = torch.log(torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1 - self.alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - self.alphas_cumprod)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    def q_sample(self, x0: torch.Tensor, step: int, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise at respaced step ``step``."""
        abar = self.alphas_cumprod[step]
        return float(abar.sqrt()) * x0 + float((1 - abar).sqrt()) * noise

    def sample(
        self,
        denoise: Callable[[torch.Tensor, int], torch.Tensor],
        noise: torch.Tensor,
        generator: Generators = None,
        guidance: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        guidance_weight: float = 2.0,
    ) -> torch.Tensor:
        """Runs the reverse process from x_T = ``noise`` (B, D) and returns the model's x0
        prediction at the last step (what EgoHMR evaluates, not the final x_{-1}).

        Args:
            denoise: (x_t (B, D), original step t) -> predicted x0 (B, D).
            generator: for the DDPM noise (DDIM with eta = 0 draws none); a list splits the rows
                into equal groups, one per generator (see :func:`normal`).
            guidance: (x_t, respaced step) -> gradient (B, D) of the negative collision score
                with respect to x_t. DDPM: fires when the step is <= 10 and shifts the posterior
                mean by ``weight * variance * g`` (steps 5..10) or ``weight * 0.01 * g`` (steps
                < 5), as ``p_sample_with_grad``. DDIM: fires when the step is <= 3 and shifts the
                implied noise by ``-sqrt(1 - abar) g`` with unit weight, as ``ddim_sample_with_grad``.
            guidance_weight: w (upstream ``--cond_grad_weight``, 2.0 with COAP).
        """
        x = noise
        x0 = noise
        for step in reversed(range(self.num_steps)):
            x0 = denoise(x, int(self.timestep_map[step]))
            if self.ddim:
                x = self._ddim_step(x, x0, step, guidance)
            else:
                x = self._ddpm_step(x, x0, step, generator, guidance, guidance_weight)
        return x0

    def _ddpm_step(self, x, x0, step, generator, guidance, weight):
        mean = float(self.posterior_mean_coef1[step]) * x0 + float(self.posterior_mean_coef2[step]) * x
        if guidance is not None and step <= 10:
            scale = float(self.posterior_variance[step]) if step >= 5 else 0.01
            mean = mean + weight * scale * guidance(x, step)
        if step == 0:
            return mean
        noise = normal(tuple(x.shape), generator, x.dtype, x.device)
        return mean + math.exp(0.5 * float(self.posterior_log_variance_clipped[step])) * noise

    def _ddim_step(self, x, x0, step, guidance):
        abar, abar_prev = self.alphas_cumprod[step], self.alphas_cumprod_prev[step]
        eps = (float((1 / abar).sqrt()) * x - x0) / float((1 / abar - 1).sqrt())
        if guidance is not None and step <= 3:
            eps = eps - float((1 - abar).sqrt()) * guidance(x, step)
            x0 = float((1 / abar).sqrt()) * x - float((1 / abar - 1).sqrt()) * eps
        return x0 * float(abar_prev.sqrt()) + float((1 - abar_prev).sqrt()) * eps
