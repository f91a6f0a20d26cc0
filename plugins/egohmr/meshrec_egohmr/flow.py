"""Conditional Glow for 1-D features, with the parameter names of nkolot's nflows fork.

ProHMR and EgoHMR's first stage use ``nflows.flows.ConditionalGlow`` from the fork
``nkolot/nflows`` (the released nflows has no ConditionalGlow). Written here from its
description so that no unpublished package is needed; module and buffer names match the fork's
``state_dict`` (``_transform._transforms.{k}``, ``dummy_buffer``, ``identity_features``, ...), so
the released checkpoints load strictly.

Structure of ``ConditionalGlow(features, hidden, num_layers, blocks_per_layer, context)``: for each
of ``num_layers`` layers, in order, :class:`ActNorm`, :class:`LULinear` and an
:class:`AdditiveCouplingTransform` whose shift network is a :class:`ResidualNet` fed with the
identity half and the context. The coupling mask alternates: in layer 0 the even feature indices
pass unchanged and the odd ones are shifted; the halves swap every layer.

Direction: ``forward`` maps data x to noise z (as nflows' transforms do) and returns the log
absolute determinant of dz/dx; ``inverse`` maps noise to data.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "ActNorm",
    "AdditiveCouplingTransform",
    "CompositeTransform",
    "ConditionalGlow",
    "LULinear",
    "ResidualBlock",
    "ResidualNet",
]


class Transform(nn.Module):
    """Base of the fork's transforms: every one carries a ``dummy_buffer`` (1.0) in its state."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("dummy_buffer", torch.tensor(1.0))

    def inverse(self, inputs: torch.Tensor, context: torch.Tensor | None = None):
        raise NotImplementedError


class ActNorm(Transform):
    """z = exp(log_scale) * x + shift, per feature. ``initialized`` is the fork's flag of the
    data-dependent initialisation (training only; inference uses the stored values)."""

    def __init__(self, features: int):
        super().__init__()
        self.register_buffer("initialized", torch.tensor(False, dtype=torch.bool))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.shift = nn.Parameter(torch.zeros(features))

    def forward(self, inputs, context=None):
        outputs = torch.exp(self.log_scale) * inputs + self.shift
        return outputs, self.log_scale.sum().expand(inputs.shape[0])

    def inverse(self, inputs, context=None):
        outputs = (inputs - self.shift) * torch.exp(-self.log_scale)
        return outputs, (-self.log_scale.sum()).expand(inputs.shape[0])


class LULinear(Transform):
    """z = L U x + bias with L unit lower triangular and U upper triangular with diagonal
    ``softplus(unconstrained_upper_diag) + eps`` (eps = 1e-3). The strict triangles are stored
    row by row (``numpy.tril_indices(features, -1)`` / ``triu_indices(features, 1)`` order)."""

    def __init__(self, features: int, eps: float = 1e-3):
        super().__init__()
        self.features = features
        self.eps = eps
        count = features * (features - 1) // 2
        self.bias = nn.Parameter(torch.zeros(features))
        self.lower_entries = nn.Parameter(torch.zeros(count))
        self.upper_entries = nn.Parameter(torch.zeros(count))
        # identity initialisation: softplus(c) + eps = 1
        self.unconstrained_upper_diag = nn.Parameter(torch.full((features,), math.log(math.expm1(1 - eps))))
        lower = torch.tril_indices(features, features, -1)
        upper = torch.triu_indices(features, features, 1)
        self.register_buffer("_lower_index", lower, persistent=False)
        self.register_buffer("_upper_index", upper, persistent=False)

    @property
    def upper_diag(self) -> torch.Tensor:
        return F.softplus(self.unconstrained_upper_diag) + self.eps

    def lower_upper(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.features
        lower = self.lower_entries.new_zeros(n, n)
        lower = lower.index_put((self._lower_index[0], self._lower_index[1]), self.lower_entries)
        lower = lower + torch.eye(n, dtype=lower.dtype, device=lower.device)
        upper = self.upper_entries.new_zeros(n, n)
        upper = upper.index_put((self._upper_index[0], self._upper_index[1]), self.upper_entries)
        upper = upper + torch.diag(self.upper_diag)
        return lower, upper

    def logabsdet(self) -> torch.Tensor:
        return torch.log(self.upper_diag).sum()

    def forward(self, inputs, context=None):
        lower, upper = self.lower_upper()
        outputs = F.linear(F.linear(inputs, upper), lower, self.bias)
        return outputs, self.logabsdet().expand(inputs.shape[0])

    def inverse(self, inputs, context=None):
        lower, upper = self.lower_upper()
        rhs = (inputs - self.bias).T
        solved = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        solved = torch.linalg.solve_triangular(upper, solved, upper=True)
        return solved.T, (-self.logabsdet()).expand(inputs.shape[0])


class ResidualBlock(nn.Module):
    """BN -> ReLU -> Linear -> BN -> ReLU -> Dropout -> Linear, plus the input (no context)."""

    def __init__(self, features: int, dropout_probability: float = 0.5):
        super().__init__()
        self.batch_norm_layers = nn.ModuleList([nn.BatchNorm1d(features) for _ in range(2)])
        self.linear_layers = nn.ModuleList([nn.Linear(features, features) for _ in range(2)])
        self.dropout = nn.Dropout(p=dropout_probability)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        temps = self.linear_layers[0](F.relu(self.batch_norm_layers[0](inputs)))
        temps = self.dropout(F.relu(self.batch_norm_layers[1](temps)))
        return inputs + self.linear_layers[1](temps)


class ResidualNet(nn.Module):
    """Linear(in + context -> hidden), residual blocks, Linear(hidden -> out). The context
    enters only at the first layer (concatenated after the inputs)."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int, context_features: int,
                 num_blocks: int = 2, dropout_probability: float = 0.5):
        super().__init__()
        self.initial_layer = nn.Linear(in_features + context_features, hidden_features)
        self.blocks = nn.ModuleList([ResidualBlock(hidden_features, dropout_probability) for _ in range(num_blocks)])
        self.final_layer = nn.Linear(hidden_features, out_features)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        temps = self.initial_layer(torch.cat((inputs, context), dim=1))
        for block in self.blocks:
            temps = block(temps)
        return self.final_layer(temps)


class AdditiveCouplingTransform(Transform):
    """z[transform] = x[transform] + net(x[identity], context); z[identity] = x[identity].
    Volume preserving (log-determinant 0). ``mask[i] > 0`` marks a transformed feature."""

    def __init__(self, mask: torch.Tensor, hidden_features: int, context_features: int, num_blocks: int,
                 dropout_probability: float = 0.5):
        super().__init__()
        features = torch.arange(len(mask))
        self.register_buffer("identity_features", features.masked_select(mask <= 0))
        self.register_buffer("transform_features", features.masked_select(mask > 0))
        self.transform_net = ResidualNet(len(self.identity_features), len(self.transform_features), hidden_features,
                                         context_features, num_blocks, dropout_probability)

    def _shifted(self, inputs, context, sign: float):
        shift = self.transform_net(inputs[:, self.identity_features], context)
        outputs = inputs.clone()
        outputs[:, self.transform_features] = inputs[:, self.transform_features] + sign * shift
        return outputs, inputs.new_zeros(inputs.shape[0])

    def forward(self, inputs, context=None):
        return self._shifted(inputs, context, 1.0)

    def inverse(self, inputs, context=None):
        return self._shifted(inputs, context, -1.0)


class CompositeTransform(Transform):
    """Transforms applied in order (forward) or in reverse order (inverse); log-determinants add."""

    def __init__(self, transforms: list[nn.Module]):
        super().__init__()
        self._transforms = nn.ModuleList(transforms)

    def forward(self, inputs, context=None):
        total = inputs.new_zeros(inputs.shape[0])
        for transform in self._transforms:
            inputs, logabsdet = transform(inputs, context)
            total = total + logabsdet
        return inputs, total

    def inverse(self, inputs, context=None):
        total = inputs.new_zeros(inputs.shape[0])
        for transform in reversed(self._transforms):
            inputs, logabsdet = transform.inverse(inputs, context)
            total = total + logabsdet
        return inputs, total


class ConditionalGlow(nn.Module):
    """Conditional density p(x | context) with a standard normal base distribution.

    Args:
        features: data dimension (144 = 24 joints x 6D for ProHMR).
        hidden_features: width of the coupling networks (1024).
        num_layers: ActNorm + LULinear + coupling layers (4).
        num_blocks_per_layer: residual blocks per coupling network (2).
        context_features: size of the conditioning vector (2566 for EgoHMR's stage 1).
        dropout_probability: dropout inside the residual blocks (training only).
    """

    def __init__(self, features: int, hidden_features: int, num_layers: int, num_blocks_per_layer: int,
                 context_features: int, dropout_probability: float = 0.5):
        super().__init__()
        self.features = features
        mask = torch.ones(features)
        mask[::2] = -1
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers.append(ActNorm(features))
            layers.append(LULinear(features))
            layers.append(AdditiveCouplingTransform(mask.clone(), hidden_features, context_features,
                                                    num_blocks_per_layer, dropout_probability))
            mask = -mask
        self._transform = CompositeTransform(layers)

    def base_log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        """(N,) log density of the standard normal at noise (N, features)."""
        return -0.5 * noise.square().sum(-1) - 0.5 * self.features * math.log(2 * math.pi)

    def log_prob(self, inputs: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x | context) (N,) and the noise z (N, features) of data x (N, features)."""
        noise, logabsdet = self._transform(inputs, context)
        return self.base_log_prob(noise) + logabsdet, noise

    def sample_and_log_prob(self, noise: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data (B, S, features) and their log densities (B, S) for noise (B, S, features) and
        context (B, C) (each context row repeated for its S samples, as the fork does)."""
        batch, samples = noise.shape[:2]
        flat = noise.reshape(batch * samples, -1)
        log_prob = self.base_log_prob(flat)
        repeated = context.repeat_interleave(samples, dim=0)
        data, logabsdet = self._transform.inverse(flat, repeated)
        return data.reshape(batch, samples, -1), (log_prob - logabsdet).reshape(batch, samples)
