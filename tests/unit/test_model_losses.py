"""Mask losses: why the full-resolution mode exists, and the pieces it is made of."""

import pytest
import torch

from vesselseg.model.losses import cldice_loss, dice_loss, mask_losses, soft_skeleton, upsample_logits


def thin_line_mask(size: int = 256, row: int = 5) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[row, 20:200] = 1
    return mask


def test_low_resolution_loss_does_not_see_a_one_pixel_vessel():
    # Predicting background everywhere: the low-res target (nearest, every 4th row) has lost the vessel.
    logits = torch.full((1, 64, 64), -20.0)
    official = mask_losses(logits, [thin_line_mask()], "official_lowres", cldice_iterations=None)
    full = mask_losses(logits, [thin_line_mask()], "full_res", cldice_iterations=None)
    assert official.dice.item() == pytest.approx(0.0, abs=1e-3)
    assert full.dice.item() > 0.9
    assert full.bce > official.bce


def test_full_resolution_scores_the_upsampled_logits_at_the_masks_own_size():
    mask = torch.zeros(50, 70)
    mask[10:40, 20:60] = 1
    logits = torch.full((1, 16, 16), 8.0)
    result = mask_losses(logits, [mask], "full_res", cldice_iterations=3)
    assert upsample_logits(logits[0], (50, 70)).shape == (50, 70)
    expected_dice = 1 - (2 * mask.sum() * torch.sigmoid(torch.tensor(8.0)) + 1) / (
        mask.numel() * torch.sigmoid(torch.tensor(8.0)) + mask.sum() + 1
    )
    assert result.dice.item() == pytest.approx(expected_dice.item(), rel=1e-4)
    assert result.cldice is not None and 0 <= result.cldice.item() <= 1


def test_dice_and_cldice_are_zero_for_a_perfect_prediction():
    mask = torch.zeros(40, 40)
    mask[18:22, 5:35] = 1
    mask[5:35, 18:22] = 1
    assert dice_loss(mask, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert cldice_loss(mask, mask, iterations=3).item() == pytest.approx(0.0, abs=1e-6)
    # A prediction that misses one branch keeps its pixels precise but loses topology sensitivity.
    half = mask.clone()
    half[5:35, 18:22] = 0
    half[18:22, 5:35] = 1
    assert cldice_loss(half, mask, iterations=3) > 0.1


def test_soft_skeleton_thins_a_bar_to_its_centre():
    bar = torch.zeros(21, 40)
    bar[8:13, 5:35] = 1
    skeleton = soft_skeleton(bar, iterations=5)
    rows = skeleton.sum(dim=1)
    assert rows[10] > 0 and rows[8] == 0 and rows[12] == 0
    assert (skeleton <= bar).all()
