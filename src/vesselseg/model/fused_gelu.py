"""The frozen image encoders' MLPs with GELU computed in the first matmul's epilogue.

SAM2's Hiera and InternViT run `fc2(gelu(fc1(x)))` as a matmul, then GELU as its own pass over the 4×-wide hidden
state, then the second matmul; Inductor cannot fuse an element-wise op into a cuBLAS call. On an H100 the two
encoders' forward took 7–9 % less with GELU in the first matmul's epilogue (benchmarks/results/encoder_gelu.md):
`torch._addmm_activation(bias, x, weight.T, use_gelu=True)` asks cuBLASLt for its bias + GELU epilogue, and
Inductor keeps that op as one extern call inside a compiled graph.

Numerics: cuBLASLt's epilogue computes the tanh form of GELU, which differs from the exact (erf) GELU these encoders
were trained with by at most 4.7e-4 (at x ≈ -2.7), below bf16's rounding step of values near 1 (3.9e-3); on the
CPU torch computes exact GELU. The op has no backward, so where anything is differentiated the layer computes
linear then exact GELU.

The first linear becomes a `GeluLinear` (same parameters) and the MLP's activation an identity: state-dict keys and
checkpoints stay as they were, and the linear still runs its own forward, where DeepSpeed ZeRO-3 gathers its weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUActivation
from transformers.models.internvl.modeling_internvl import InternVLVisionMLP
from transformers.models.sam2.modeling_sam2 import Sam2FeedForward


class GeluLinear(nn.Linear):
    """gelu(linear(x)): one cuBLASLt call where nothing is differentiated, else linear then exact GELU."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in self.parameters())):
            return F.gelu(super().forward(hidden))
        rows = hidden.reshape(-1, hidden.shape[-1])
        out = torch._addmm_activation(self.bias, rows, self.weight.t(), use_gelu=True)
        return out.view(*hidden.shape[:-1], out.shape[-1])


# The MLPs whose computation is exactly first linear → activation → second linear: their first linear's and their
# activation's attribute names.
_MLPS: dict[type[nn.Module], tuple[str, str]] = {
    Sam2FeedForward: ("proj_in", "activation"),
    InternVLVisionMLP: ("fc1", "activation_fn"),
}


def _eligible(module: nn.Module) -> bool:
    names = _MLPS.get(type(module))
    if names is None or (isinstance(module, Sam2FeedForward) and (module.num_layers != 2 or module.sigmoid_output)):
        return False
    first, activation = (getattr(module, name) for name in names)
    return type(first) is nn.Linear and first.bias is not None and type(activation) is GELUActivation


def fuse_mlp_gelu(root: nn.Module) -> int:
    """Fuse each eligible MLP's GELU under `root` into its first linear, in place; returns how many MLPs."""
    mlps = [module for module in root.modules() if _eligible(module)]
    for mlp in mlps:
        first, activation = _MLPS[type(mlp)]
        getattr(mlp, first).__class__ = GeluLinear
        setattr(mlp, activation, nn.Identity())
    return len(mlps)
