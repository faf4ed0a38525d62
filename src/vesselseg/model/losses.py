"""Mask losses for the `[SEG]` head: Sa2VA's low-resolution objective and a full-resolution one for thin vessels.

Sa2VA scores SAM2's 1/4-resolution logits against a nearest-downsampled mask; a 1–2 px vessel mostly vanishes
in that downsampling, so the model is never told about it. The full-resolution mode upsamples the logits to the
mask's native size instead (the same bilinear step used at prediction time) and can add a clDice term, which
rewards getting the vessel centrelines (topology) right rather than only the pixel overlap.
All terms are computed in float32 and averaged with equal weight per mask, whatever its size.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vesselseg.model.config import MaskLoss


@dataclass
class MaskLosses:
    bce: torch.Tensor
    dice: torch.Tensor
    cldice: torch.Tensor | None


def dice_loss(probabilities: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − (2|P∩G| + eps) / (|P| + |G| + eps) on soft masks; Sa2VA's "naive" Dice with eps = 1."""
    intersection = (probabilities * target).sum()
    return 1 - (2 * intersection + eps) / (probabilities.sum() + target.sum() + eps)


def _soft_erode(x: torch.Tensor) -> torch.Tensor:
    # Min-pooling along each axis separately keeps one-pixel lines from disappearing diagonally.
    vertical = -F.max_pool2d(-x, kernel_size=(3, 1), stride=1, padding=(1, 0))
    horizontal = -F.max_pool2d(-x, kernel_size=(1, 3), stride=1, padding=(0, 1))
    return torch.minimum(vertical, horizontal)


def _soft_dilate(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def soft_skeleton(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Differentiable morphological skeleton of a soft mask (Shit et al., clDice, CVPR 2021)."""
    x = x[None, None]
    skeleton = F.relu(x - _soft_dilate(_soft_erode(x)))
    for _ in range(iterations):
        x = _soft_erode(x)
        delta = F.relu(x - _soft_dilate(_soft_erode(x)))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton[0, 0]


def cldice_loss(probabilities: torch.Tensor, target: torch.Tensor, iterations: int, eps: float = 1.0) -> torch.Tensor:
    """1 − harmonic mean of topology precision (predicted skeleton inside the truth) and sensitivity."""
    skeleton_pred = soft_skeleton(probabilities, iterations)
    skeleton_true = soft_skeleton(target, iterations)
    precision = ((skeleton_pred * target).sum() + eps) / (skeleton_pred.sum() + eps)
    sensitivity = ((skeleton_true * probabilities).sum() + eps) / (skeleton_true.sum() + eps)
    return 1 - 2 * precision * sensitivity / (precision + sensitivity)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of one (h, w) logit map; used by the loss and by prediction alike."""
    return F.interpolate(logits[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def mask_losses(
    logits: torch.Tensor,
    targets: list[torch.Tensor],
    mode: MaskLoss,
    cldice_iterations: int | None,
) -> MaskLosses:
    """`logits`: (N, h, w) SAM2 low-res logits; `targets`: N binary masks, each at its image's native size.

    clDice is computed only when `cldice_iterations` is given (its weight is non-zero).
    """
    bce, dice, cldice = [], [], []
    for mask_logits, target in zip(logits, targets, strict=True):
        target = target.to(mask_logits.device, torch.float32)
        if mode == "official_lowres":
            mask_logits = mask_logits.float()
            target = F.interpolate(target[None, None], size=mask_logits.shape, mode="nearest")[0, 0]
        else:
            mask_logits = upsample_logits(mask_logits, tuple(target.shape))
        probabilities = mask_logits.sigmoid()
        bce.append(F.binary_cross_entropy_with_logits(mask_logits, target))
        dice.append(dice_loss(probabilities, target))
        if cldice_iterations is not None:
            cldice.append(cldice_loss(probabilities, target, cldice_iterations))
    return MaskLosses(
        bce=torch.stack(bce).mean(),
        dice=torch.stack(dice).mean(),
        cldice=torch.stack(cldice).mean() if cldice else None,
    )
