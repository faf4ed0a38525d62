"""Prediction: probability maps at each image's native size, with the answer generated or teacher-forced.

`generate` lets the LLM write its answer greedily, as Sa2VA's `predict_forward` does (up to 2048 new tokens, stopping
at any of the config's `stop_token_ids`); every `[SEG]` it writes before its last token makes a mask, and an
answer without one gives none (the result says how many it wrote). The `[SEG]` states are then read by one forward
pass over prompt + generated tokens but the last (whose state the official code never reads either), which is the
same causal computation generation did, so an identical answer gives an identical mask. `forced` appends the
answer the model was fine-tuned with (`config.fixed_answer`, "It is [SEG].") and reads the `[SEG]` state from one
forward pass: one mask per image, no decoding loop. `auto` (the default) is the config's `answer_mode`: `forced` for
the models fine-tuned here, `generate` for everything else, imported official checkpoints included.
Mask logits are upsampled bilinearly to native size before the sigmoid (in two steps through SAM2's input size
where the config says `via_sam2_input`, as the official code does); nothing is thresholded here.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from vesselseg.model.config import Sa2VAConfig
from vesselseg.model.losses import upsample_logits
from vesselseg.model.modeling import Sa2VAModel
from vesselseg.model.processing import Sa2VABatch, Sa2VAProcessor
from vesselseg.model.prompts import FORCED_ANSWER

Mode = Literal["auto", "forced", "generate"]
OFFICIAL_MAX_NEW_TOKENS = 2048


@dataclass
class PredictionResult:
    probabilities: list[np.ndarray]  # one float32 H×W map in [0, 1] per [SEG] in the answer
    text: str  # the answer, special tokens included, without the end-of-turn token
    seg_count: int  # [SEG] tokens in the answer; 0 means the model declined to segment


@torch.no_grad()
def predict(
    model: Sa2VAModel,
    processor: Sa2VAProcessor,
    images: Sequence[np.ndarray],
    prompts: Sequence[str],
    mode: Mode = "auto",
    batch_size: int = 4,
    max_new_tokens: int = OFFICIAL_MAX_NEW_TOKENS,
) -> list[PredictionResult]:
    """`images`: uint8 H×W×3; `prompts`: user turns with one `<image>`, e.g. from `prompts.segmentation_prompt`."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    mode = resolve_mode(model.config, mode)
    was_training = model.training
    model.eval()
    results = []
    try:
        for start in range(0, len(images), batch_size):
            chunk_images = images[start : start + batch_size]
            chunk_prompts = prompts[start : start + batch_size]
            if mode == "forced":
                answers = [processor.answer_ids(model.config.fixed_answer or FORCED_ANSWER)] * len(chunk_images)
            else:
                answers = [
                    generate_answer(model, processor, image, prompt, max_new_tokens)
                    for image, prompt in zip(chunk_images, chunk_prompts)
                ]
            results += _masks_for_answers(model, processor, chunk_images, chunk_prompts, answers)
    finally:
        model.train(was_training)
    return results


def resolve_mode(config: Sa2VAConfig, mode: str) -> Literal["forced", "generate"]:
    """`auto` → the config's `answer_mode`; refuses unknown modes."""
    if mode not in ("auto", "forced", "generate"):
        raise ValueError(f"mode must be 'auto', 'forced' or 'generate', not {mode!r}")
    return config.answer_mode if mode == "auto" else mode


def stop_token_ids(config: Sa2VAConfig, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The config's stop tokens (official imports: the tokenizer's EOS and the template's stop words), else EOS."""
    return list(config.stop_token_ids) if config.stop_token_ids else [tokenizer.eos_token_id]


def generate_answer(
    model: Sa2VAModel, processor: Sa2VAProcessor, image: np.ndarray, prompt: str, max_new_tokens: int
) -> list[int]:
    """Greedy answer tokens, ending with a stop token unless `max_new_tokens` ran out first."""
    batch = _to_model(processor([image], [prompt]), model)
    embeddings = model.embed_inputs(batch.input_ids, batch.pixel_values)
    tokenizer = processor.tokenizer
    generated = model.language_model.generate(
        inputs_embeds=embeddings,
        attention_mask=batch.attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stop_token_ids(model.config, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    return generated[0].tolist()


def _masks_for_answers(
    model: Sa2VAModel,
    processor: Sa2VAProcessor,
    images: Sequence[np.ndarray],
    prompts: Sequence[str],
    answers: list[list[int]],
) -> list[PredictionResult]:
    tokenizer = processor.tokenizer
    stops = stop_token_ids(model.config, tokenizer)
    texts = [tokenizer.decode(a[:-1] if a[-1:] and a[-1] in stops else a) for a in answers]
    # The last token's state is never read (official `get_seg_hidden_states` takes sequences[:-1]).
    answers = [a[:-1] for a in answers]
    seg_counts = [a.count(model.config.seg_token_id) for a in answers]
    probabilities: list[list[np.ndarray]] = [[] for _ in answers]
    with_seg = [i for i, count in enumerate(seg_counts) if count]
    if with_seg:
        batch = processor(
            [images[i] for i in with_seg], [prompts[i] for i in with_seg], answer_ids=[answers[i] for i in with_seg]
        )
        batch = _to_model(batch, model)
        logits = iter(model(**{**batch, "labels": None}).mask_logits)
        for i in with_seg:
            size = images[i].shape[:2]
            probabilities[i] = [
                upsample_mask_logits(model.config, next(logits), size).sigmoid().cpu().numpy()
                for _ in range(seg_counts[i])
            ]
    return [PredictionResult(p, t, c) for p, t, c in zip(probabilities, texts, seg_counts, strict=True)]


def upsample_mask_logits(config: Sa2VAConfig, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Low-res mask logits → (h, w): bilinear, through SAM2's input size first where the config says so."""
    if config.mask_upsampling == "via_sam2_input" and config.mask_refiner_channels == 0:
        logits = upsample_logits(logits, (config.sam2_image_size, config.sam2_image_size))
    return upsample_logits(logits, size)


def _to_model(batch: Sa2VABatch, model: Sa2VAModel) -> Sa2VABatch:
    return batch.to(model.device, model.dtype)
