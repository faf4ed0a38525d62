"""Parity of an imported official Sa2VA checkpoint with the official remote code, on a machine that has the weights.

The official side runs the release's own `predict_forward` (its Python files, `trust_remote_code=True`); ours runs
the native model `import-official` made from the same folder, with `vesselseg.model.predict` in `generate` mode
(greedy decoding, a mask per generated [SEG], thresholded at 0.5 after bilinear upsampling, as the official code
does). The two sides can run in separate environments, since the official remote code was written for
transformers 4.4x:

    # where the official code runs (its transformers, torchvision, peft; a GPU)
    python benchmarks/official_parity.py official --src /models/Sa2VA-4B --image fundus.png --out parity/official.npz
    # where vesselseg runs (PYTHONPATH=src; imports the folder once into --native)
    python benchmarks/official_parity.py ours --src /models/Sa2VA-4B --native /models/Sa2VA-4B-native \\
        --image fundus.png --out parity/ours.npz
    python benchmarks/official_parity.py compare parity/official.npz parity/ours.npz

`both` runs the two in one process when the installed transformers runs the official code. Agreement means the
same answer text and masks whose IoU is close to 1 (bf16 kernels differ between the two implementations, so a
few boundary pixels may flip). The same comparison on tiny random checkpoints of both
families, stage by stage, is benchmarks/official_tiny.py with tests/unit/test_official_parity.py.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from machine import describe
from PIL import Image


def prompt(expression: str) -> str:
    return f"<image>\nPlease segment {expression} in this image."  # vesselseg.model.prompts.segmentation_prompt


def run_official(src: str, image: Image.Image, expression: str, dtype: torch.dtype) -> tuple[str, np.ndarray]:
    """The release's own code: `AutoModel` with remote code, then `predict_forward`."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(src, torch_dtype=dtype, trust_remote_code=True, low_cpu_mem_usage=True)
    model = model.eval().cuda()
    tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=True, use_fast=False)
    with torch.no_grad():
        result = model.predict_forward(image=image, text=prompt(expression), tokenizer=tokenizer)
    masks = [np.asarray(m)[0] for m in result["prediction_masks"]]  # (frames=1, H, W) each
    return result["prediction"], np.stack(masks) if masks else np.zeros((0, image.height, image.width), bool)


def run_ours(src: str, native: Path, image: Image.Image, expression: str, dtype: torch.dtype) -> tuple[str, np.ndarray]:
    from vesselseg.model import Sa2VAModel, Sa2VAProcessor
    from vesselseg.model.official import REPORT, import_official
    from vesselseg.model.predict import predict

    if not (native / REPORT).is_file():
        report = import_official(src, native)
        print(f"imported {report.release or report.family}: {report.parameters / 1e9:.3f}B parameters, "
              f"{len(report.tensors)} tensors mapped, {len(report.ignored)} ignored by design")  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = Sa2VAModel.from_pretrained(native, dtype=dtype).to(device)
    processor = Sa2VAProcessor.from_pretrained(native)
    [result] = predict(model, processor, [np.asarray(image.convert("RGB"))], [prompt(expression)], mode="generate")
    masks = [p > 0.5 for p in result.probabilities]
    return result.text, np.stack(masks) if masks else np.zeros((0, image.height, image.width), bool)


def compare(official: dict, ours: dict) -> None:
    print(f"official answer: {official['text']!r}")
    print(f"ours answer:     {ours['text']!r}")
    a, b = official["masks"], ours["masks"]
    print(f"masks: official {len(a)}, ours {len(b)}")
    print(f"{'mask':>5}{'IoU':>10}{'pixels equal':>14}{'official px':>13}{'ours px':>10}")
    for i, (x, y) in enumerate(zip(a, b)):
        union = np.logical_or(x, y).sum()
        iou = np.logical_and(x, y).sum() / union if union else 1.0
        print(f"{i:>5}{iou:>10.4f}{(x == y).mean():>14.6f}{int(x.sum()):>13}{int(y.sum()):>10}")


def save(path: Path, text: str, masks: np.ndarray, side: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, text=np.array(text), masks=masks, machine=np.array(describe()), side=np.array(side))
    print(f"{side}: {len(masks)} masks, answer {text!r}, on {describe()} → {path}")


def load(path: Path) -> dict:
    data = np.load(path)
    return {"text": str(data["text"]), "masks": data["masks"], "machine": str(data["machine"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="side", required=True)
    for side in ("official", "ours", "both"):
        command = sub.add_parser(side)
        command.add_argument("--src", required=True, help="the official Sa2VA Hugging Face folder")
        command.add_argument("--image", required=True, type=Path)
        command.add_argument("--expression", default="the blood vessels")
        command.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
        if side != "official":
            command.add_argument("--native", required=True, type=Path, help="imported folder (made if absent)")
        if side != "both":
            command.add_argument("--out", required=True, type=Path, help="where this side's answer and masks go")
    command = sub.add_parser("compare")
    command.add_argument("official", type=Path)
    command.add_argument("ours", type=Path)
    args = parser.parse_args()

    if args.side == "compare":
        official, ours = load(args.official), load(args.ours)
        print(f"official ran on {official['machine']}, ours on {ours['machine']}")
        compare(official, ours)
        return
    image = Image.open(args.image).convert("RGB")
    dtype = getattr(torch, args.dtype)
    if args.side == "official":
        save(args.out, *run_official(args.src, image, args.expression, dtype), "official")
    elif args.side == "ours":
        save(args.out, *run_ours(args.src, args.native, image, args.expression, dtype), "ours")
    else:
        text_a, masks_a = run_official(args.src, image, args.expression, dtype)
        torch.cuda.empty_cache()
        text_b, masks_b = run_ours(args.src, args.native, image, args.expression, dtype)
        print(f"both on {describe()}")
        compare({"text": text_a, "masks": masks_a}, {"text": text_b, "masks": masks_b})


if __name__ == "__main__":
    main()
