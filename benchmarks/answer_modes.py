"""How often `generate` and `forced` give the same masks on a model fine-tuned here (the `auto` mode's choice).

Fine-tuning here always supervises the fixed answer "It is [SEG]." (vesselseg.finetune), so such a model's config
records `answer_mode: forced` and `auto` prediction forces that answer. This measures what the other mode would
give: `tiny` is fine-tuned on synthetic fundus images (vesselseg.data.synthetic, the demo's data) with the
project's recipe and loss for a fixed number of steps, then on held-out images `generate` (greedy, official
stop tokens, up to 2048 tokens) and `forced` are both run; the table gives per image the generated answer, its
[SEG] count, and the IoU and pixel agreement of the two masks (thresholded at 0.5).

    PYTHONPATH=src .venv/bin/python benchmarks/answer_modes.py --steps 300 --train 8 --test 16
"""

import argparse
import time

import numpy as np
import torch
from machine import describe

from vesselseg.data.synthetic import generate_fundus
from vesselseg.model import prompts
from vesselseg.model.finetuning import apply_training_recipe
from vesselseg.model.predict import predict
from vesselseg.model.presets import build_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--train", type=int, default=8, help="training images")
    parser.add_argument("--test", type=int, default=16, help="held-out images")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model, processor = build_preset("tiny")
    apply_training_recipe(model)
    train = [generate_fundus(args.size, args.seed, i) for i in range(args.train)]
    test = [generate_fundus(args.size, args.seed + 1, i) for i in range(args.test)]
    prompt = prompts.segmentation_prompt("the blood vessels")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    started = time.perf_counter()
    model.train()
    for step in range(args.steps):
        chosen = [train[(step * args.batch + k) % len(train)] for k in range(args.batch)]
        batch = processor(
            [f.image for f in chosen],
            [prompt] * len(chosen),
            answers=[prompts.FORCED_ANSWER] * len(chosen),
            masks=[f.mask.astype(np.uint8) for f in chosen],
        )
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    trained_s = time.perf_counter() - started
    print(f"config: answer_mode={model.config.answer_mode!r}, fixed_answer={model.config.fixed_answer!r}")

    images = [f.image for f in test]
    forced = predict(model, processor, images, [prompt] * len(images), mode="forced")
    generated = predict(model, processor, images, [prompt] * len(images), mode="generate", batch_size=1)
    print(f"\n{describe()}; tiny fine-tuned {args.steps} steps ({trained_s:.0f} s) on {args.train} images")
    print(f"{'image':>5} {'[SEG]':>5} {'IoU':>8} {'pixels equal':>13}  generated answer")
    same = 0
    for i, (f, g) in enumerate(zip(forced, generated, strict=True)):
        a = f.probabilities[0] > 0.5
        if g.seg_count:
            b = np.max(np.stack(g.probabilities), axis=0) > 0.5
            union = (a | b).sum()
            iou = (a & b).sum() / union if union else 1.0
            equal = (a == b).mean()
        else:
            iou, equal = float("nan"), float("nan")
        same += bool(g.seg_count) and bool(equal == 1.0)
        print(f"{i:>5} {g.seg_count:>5} {iou:>8.4f} {equal:>13.6f}  {g.text!r}")
    print(f"identical masks: {same} of {len(test)} images")


if __name__ == "__main__":
    main()
