"""`Sa2VAProcessor`: images, prompts, answers and masks → one `Sa2VABatch` for `Sa2VAModel`.

Two image paths, as in Sa2VA: the VLM sees InternVL dynamic tiles (the image resized to the tile grid closest
to its aspect ratio, cut into tiles, plus a thumbnail when there is more than one tile); SAM2 sees the whole
image resized to its square input without keeping the aspect ratio. Masks stay at native size (a list, since
sizes differ), so the loss and the predictions can work at full resolution. With `config.sam2_normalization ==
"model_dtype"` (official checkpoints) the SAM2 image leaves here resized but not normalised (values 0–255), and
the model normalises it in its own dtype as the official code does; with `config.prepend_bos` prompts start with
the tokenizer's BOS, as the official InternLM2 tokenizer's `encode` makes them.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast

from vesselseg.model.config import Sa2VAConfig
from vesselseg.model.modeling import IGNORE_INDEX
from vesselseg.model.prompts import (
    IMAGE_PLACEHOLDER,
    IMG_CONTEXT,
    IMG_END,
    IMG_START,
    SEG,
    assistant_reply,
    user_turn,
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class Sa2VABatch(Mapping):
    """Model inputs; a mapping so that `model(**batch)` works. Float tensors are float32 until `to(dtype=...)`."""

    input_ids: torch.Tensor  # (B, L), right-padded
    attention_mask: torch.Tensor  # (B, L)
    pixel_values: torch.Tensor  # (all tiles of the batch, 3, T, T), sample by sample
    sam2_pixel_values: torch.Tensor  # (B, 3, S, S)
    labels: torch.Tensor | None = None  # (B, L), IGNORE_INDEX except on the answers
    gt_masks: list[torch.Tensor] | None = None  # B × (masks of sample, H, W) in {0, 1}

    def __getitem__(self, key: str):
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return (f.name for f in fields(self))

    def __len__(self) -> int:
        return len(fields(self))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Sa2VABatch":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, dtype) if dtype is not None and t.is_floating_point() else t.to(device)

        return Sa2VABatch(
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            pixel_values=move(self.pixel_values),
            sam2_pixel_values=move(self.sam2_pixel_values),
            labels=None if self.labels is None else move(self.labels),
            gt_masks=None if self.gt_masks is None else [m.to(device) for m in self.gt_masks],
        )


def _normalize(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32, as a channels-first view: the batch's torch.stack makes the one contiguous copy.
    In place, because at SAM2's 1024 px this runs per image on the inference hot path."""
    array = np.array(image, dtype=np.float32)
    array /= 255.0
    array -= IMAGENET_MEAN
    array /= IMAGENET_STD
    return torch.from_numpy(array).permute(2, 0, 1)


def tile_grid(width: int, height: int, tile: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """InternVL's choice of (columns, rows): the grid whose aspect ratio is closest to the image's; on a tie the
    larger grid wins if the image has more than half that grid's pixels."""
    grids = sorted(
        ((c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1) if min_tiles <= c * r <= max_tiles),
        key=lambda grid: (grid[0] * grid[1], grid[0]),
    )
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for columns, rows in grids:
        diff = abs(aspect - columns / rows)
        if diff < best_diff:
            best, best_diff = (columns, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * columns * rows:
            best = (columns, rows)
    return best


class Sa2VAProcessor:
    def __init__(self, config: Sa2VAConfig, tokenizer: PreTrainedTokenizerFast):
        self.config = config
        self.tokenizer = tokenizer
        for field, token in (("image_token_id", IMG_CONTEXT), ("seg_token_id", SEG)):
            if getattr(config, field) != tokenizer.convert_tokens_to_ids(token):
                raise ValueError(f"config.{field} does not match the tokenizer's id of {token}")
        if config.prepend_bos and tokenizer.bos_token_id is None:
            raise ValueError("config.prepend_bos is set but the tokenizer has no BOS token")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Sa2VAProcessor":
        return cls(Sa2VAConfig.from_pretrained(directory), PreTrainedTokenizerFast.from_pretrained(directory))

    def save_pretrained(self, directory: str | Path) -> None:
        """Writes the tokenizer; the model's `save_pretrained` writes the config the processor also reads."""
        self.tokenizer.save_pretrained(directory)

    def image_tiles(self, image: np.ndarray) -> torch.Tensor:
        """(tiles, 3, T, T) for the VLM path."""
        tile = self.config.tile_size
        pil = Image.fromarray(image)
        columns, rows = tile_grid(pil.width, pil.height, tile, self.config.min_tiles, self.config.max_tiles)
        resized = pil.resize((columns * tile, rows * tile), Image.Resampling.BICUBIC)
        tiles = [
            resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile))
            for r in range(rows)
            for c in range(columns)
        ]
        if self.config.use_thumbnail and len(tiles) > 1:
            tiles.append(pil.resize((tile, tile), Image.Resampling.BICUBIC))
        return torch.stack([_normalize(t) for t in tiles])

    def sam2_image(self, image: np.ndarray) -> torch.Tensor:
        """(3, S, S) for the SAM2 path: a plain resize, aspect ratio not kept; normalised unless the model does it."""
        size = self.config.sam2_image_size
        resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
        if self.config.sam2_normalization == "model_dtype":
            return torch.from_numpy(np.array(resized, dtype=np.float32)).permute(2, 0, 1)
        return _normalize(resized)

    def prompt_ids(self, prompt: str, num_tiles: int) -> list[int]:
        """The chat-formatted user turn with `<image>` expanded to `<img><IMG_CONTEXT>…</img>`."""
        if prompt.count(IMAGE_PLACEHOLDER) != 1:
            raise ValueError(f"a prompt needs exactly one {IMAGE_PLACEHOLDER}: {prompt!r}")
        image_text = IMG_START + IMG_CONTEXT * (num_tiles * self.config.tokens_per_tile) + IMG_END
        text = user_turn(prompt.replace(IMAGE_PLACEHOLDER, image_text))
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return [self.tokenizer.bos_token_id, *ids] if self.config.prepend_bos else ids

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(assistant_reply(answer), add_special_tokens=False).input_ids

    def __call__(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        answers: Sequence[str] | None = None,
        answer_ids: Sequence[list[int]] | None = None,
        masks: Sequence[np.ndarray] | None = None,
    ) -> Sa2VABatch:
        """`images`: uint8 H×W×3. `answers` (text) or `answer_ids` (tokens as generated) are appended after each
        prompt and supervised; without either the batch ends at the assistant's turn, ready for generation.
        `masks`: per image, H×W or (number of [SEG] in its answer)×H×W, nonzero = object."""
        if answers is not None and answer_ids is not None:
            raise ValueError("give answers or answer_ids, not both")
        if answers is not None:
            answer_ids = [self.answer_ids(a) for a in answers]
        for name, values in (("prompts", prompts), ("answers", answer_ids), ("masks", masks)):
            if values is not None and len(values) != len(images):
                raise ValueError(f"{len(images)} images but {len(values)} {name}")

        tiles, sam2_images, sequences, label_sequences = [], [], [], []
        for i, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image {i}: expected uint8 H×W×3, got {image.dtype} {image.shape}")
            image_tiles = self.image_tiles(image)
            tiles.append(image_tiles)
            sam2_images.append(self.sam2_image(image))
            ids = self.prompt_ids(prompts[i], len(image_tiles))
            answer = [] if answer_ids is None else list(answer_ids[i])
            sequences.append(ids + answer)
            label_sequences.append([IGNORE_INDEX] * len(ids) + answer)

        length = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([s + [pad] * (length - len(s)) for s in sequences])
        attention_mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in sequences])
        labels = None
        if answer_ids is not None:
            labels = torch.tensor([s + [IGNORE_INDEX] * (length - len(s)) for s in label_sequences])
        return Sa2VABatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=torch.cat(tiles),
            sam2_pixel_values=torch.stack(sam2_images),
            labels=labels,
            gt_masks=None if masks is None else [self._mask_tensor(m, img.shape[:2]) for m, img in zip(masks, images)],
        )

    @staticmethod
    def _mask_tensor(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        mask = mask[None] if mask.ndim == 2 else mask
        if mask.shape[1:] != size:
            raise ValueError(f"mask of shape {mask.shape[1:]} for an image of shape {size}")
        return torch.from_numpy(mask != 0).float()
