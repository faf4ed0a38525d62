"""Prediction: probability maps at each image's native size, with the answer teacher-forced or generated.

`forced` appends the answer "It is [SEG]." to the prompt and reads the `[SEG]` hidden state from one forward
pass: one mask per image, no decoding loop. `generate` lets the LLM write its answer greedily, as Sa2VA's
`predict_forward` does; every `[SEG]` it writes makes a mask, and an answer without one gives none (the result
says how many it wrote). The `[SEG]` states are then read by one forward pass over prompt + generated tokens,
which is the same causal computation generation did, so an identical answer gives an identical mask.
Mask logits are upsampled bilinearly to native size before the sigmoid; nothing is thresholded here.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from vesselseg.model.losses import upsample_logits
from vesselseg.model.modeling import Sa2VAModel
from vesselseg.model.processing import Sa2VABatch, Sa2VAProcessor
from vesselseg.model.prompts import FORCED_ANSWER

Mode = Literal["forced", "generate"]


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
    mode: Mode = "forced",
    batch_size: int = 4,
    max_new_tokens: int = 32,
) -> list[PredictionResult]:
    """`images`: uint8 H×W×3; `prompts`: user turns with one `<image>`, e.g. from `prompts.segmentation_prompt`."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    if mode not in ("forced", "generate"):
        raise ValueError(f"mode must be 'forced' or 'generate', not {mode!r}")
    was_training = model.training
    model.eval()
    results = []
    try:
        for start in range(0, len(images), batch_size):
            chunk_images = images[start : start + batch_size]
            chunk_prompts = prompts[start : start + batch_size]
            if mode == "forced":
                answers = [processor.answer_ids(FORCED_ANSWER)] * len(chunk_images)
            else:
                answers = [
                    _generate(model, processor, image, prompt, max_new_tokens)
                    for image, prompt in zip(chunk_images, chunk_prompts)
                ]
            results += _masks_for_answers(model, processor, chunk_images, chunk_prompts, answers)
    finally:
        model.train(was_training)
    return results


def _generate(
    model: Sa2VAModel, processor: Sa2VAProcessor, image: np.ndarray, prompt: str, max_new_tokens: int
) -> list[int]:
    """Greedy answer tokens, ending with the end-of-turn token unless `max_new_tokens` ran out first."""
    batch = _to_model(processor([image], [prompt]), model)
    embeddings = model.embed_inputs(batch.input_ids, batch.pixel_values)
    tokenizer = processor.tokenizer
    generated = model.language_model.generate(
        inputs_embeds=embeddings,
        attention_mask=batch.attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
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
    texts = [tokenizer.decode(a[:-1] if a[-1:] == [tokenizer.eos_token_id] else a) for a in answers]
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
                upsample_logits(next(logits), size).sigmoid().cpu().numpy() for _ in range(seg_counts[i])
            ]
    return [PredictionResult(p, t, c) for p, t, c in zip(probabilities, texts, seg_counts, strict=True)]


def _to_model(batch: Sa2VABatch, model: Sa2VAModel) -> Sa2VABatch:
    return batch.to(model.device, model.dtype)
