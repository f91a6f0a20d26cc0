"""Helpers shared by the op families' registrations."""

from __future__ import annotations


def no_double_backward(name: str):
    """A backward formula for a ``*_backward`` op that raises: meshrec's kernels are differentiable
    once (gradients of gradients are not implemented)."""

    def backward(ctx, *grads):
        raise RuntimeError(
            f"meshrec::{name} has no double backward (gradients of its gradient). "
            "Use the pure-PyTorch reference in meshrec.ops.reference for higher-order derivatives."
        )

    return backward
