"""The frozen image encoders' MLPs with GELU computed in the first matmul's epilogue.

SAM2's Hiera and InternViT run `fc2(gelu(fc1(x)))` as a matmul, then GELU as its own pass over the 4×-wide hidden
state, then the second matmul; Inductor cannot fuse an element-wise op into a cuBLAS call. On an H100 that pass was
~13 ms of SAM2 Hiera-L's 113 ms compiled forward for 16 images (benchmarks/results/train_profile.md).
`torch._addmm_activation(bias, x, weight.T, use_gelu=True)` asks cuBLASLt for its bias + GELU epilogue instead, and
Inductor keeps that op as one extern call inside a compiled graph.

Numerics: cuBLASLt's epilogue computes the tanh form of GELU, which differs from the exact (erf) GELU these encoders
were trained with by at most 4.7e-4 (at x ≈ -2.7), below bf16's rounding step of values near 1 (3.9e-3); on the
CPU torch computes exact GELU. The op has no backward, so an MLP that anything is differentiated through runs its
original forward.

The swap changes each module's class, not its parameters: state-dict keys, checkpoints and hooks stay as they were.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import GELUActivation
from transformers.models.internvl.modeling_internvl import InternVLVisionMLP
from transformers.models.sam2.modeling_sam2 import Sam2FeedForward


def linear_gelu(linear: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """gelu(linear(hidden)) in one cuBLASLt call on CUDA (tanh-form GELU there, exact on the CPU)."""
    rows = hidden.reshape(-1, hidden.shape[-1])
    out = torch._addmm_activation(linear.bias, rows, linear.weight.t(), use_gelu=True)
    return out.view(*hidden.shape[:-1], out.shape[-1])


def _needs_grad(hidden: torch.Tensor, linear: nn.Linear) -> bool:
    return torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in linear.parameters()))


class FusedGeluSam2FeedForward(Sam2FeedForward):
    """Sam2FeedForward (two layers, GELU, no sigmoid) with GELU in `proj_in`'s epilogue."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if _needs_grad(hidden_states, self.proj_in):
            return super().forward(hidden_states)
        return self.proj_out(linear_gelu(self.proj_in, hidden_states))


class FusedGeluInternVLVisionMLP(InternVLVisionMLP):
    """InternVLVisionMLP (GELU) with GELU in `fc1`'s epilogue."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if _needs_grad(hidden_states, self.fc1):
            return super().forward(hidden_states)
        return self.fc2(linear_gelu(self.fc1, hidden_states))


def _fused_class(module: nn.Module) -> type[nn.Module] | None:
    """The fused form of `module`, or None where its computation is not exactly linear → exact GELU → linear."""
    if type(module) is Sam2FeedForward:
        plain = module.num_layers == 2 and not module.sigmoid_output
        first, activation, fused = module.proj_in, module.activation, FusedGeluSam2FeedForward
    elif type(module) is InternVLVisionMLP:
        plain, first, activation, fused = True, module.fc1, module.activation_fn, FusedGeluInternVLVisionMLP
    else:
        return None
    return fused if plain and type(activation) is GELUActivation and first.bias is not None else None


def fuse_mlp_gelu(root: nn.Module) -> int:
    """Swap every eligible MLP under `root` for its fused form in place; returns how many were swapped."""
    swapped = 0
    for module in root.modules():
        if fused := _fused_class(module):
            module.__class__ = fused
            swapped += 1
    return swapped
