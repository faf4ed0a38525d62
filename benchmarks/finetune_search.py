"""Fine-tuning settings compared by validation Dice, one real finetune-stage run per setting, spread over the GPUs.

    python benchmarks/finetune_search.py --setting 'base={}' --setting 'long={"steps": 1000}' [--base '{...}']

Each setting is a JSON object of FinetuneConfig fields laid over `--base` (itself over the defaults). Runs go
through `vesselseg.stages.finetune` against the object store that `VESSELSEG_S3_*` / `vesselseg store up` names,
on the data-prep defaults (the synthetic dataset); with GPUs, `--per-gpu` runs per GPU at a time
(CUDA_VISIBLE_DEVICES), on the CPU one at a time. Only the validation split is read: each run's training log has
the validation Dice at 0.5 and at the best threshold every `val_every` steps, which is what the table shows.
Choosing by validation and then reporting test numbers from a fresh run (the pipeline, `make demo`) keeps the test
split out of every choice.
Rows go to stdout as JSON lines as runs finish (and to $OUT/finetune_search.jsonl when OUT is set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vesselseg.finetune.checkpoint import LOG_FILE
from vesselseg.finetune.log import TrainLog
from vesselseg.stages import data_prep, finetune
from vesselseg.storage import ObjectStore


def one_run(name: str, training: dict, dataset: dict, prefix: str) -> dict:
    """In this process: the stage run and its validation curve."""
    store = ObjectStore()
    config = finetune.Config.model_validate({"dataset": dataset, "prefix": f"{prefix}/{name}", "training": training})
    started = time.perf_counter()
    result = finetune.run(config, store)
    rows = [json.loads(line) for line in store.get_bytes(store.key_of(result.training.uri) + LOG_FILE).splitlines()]
    curve = [(r["step"], r["val_dice"], r["val_dice_tuned"]) for r in TrainLog(rows).validations()]
    return {
        "setting": name,
        "training": training,
        "wall_s": time.perf_counter() - started,
        "train_s": result.summary.train_s,
        "final_loss": result.summary.final_loss,
        "curve": curve,
        "best_val_dice_tuned": max(c[2] for c in curve),
        "last_val_dice_tuned": curve[-1][2],
    }


def launch(name: str, training: dict, dataset: dict, prefix: str, gpu: int | None) -> dict:
    """A child process per run, so that each sees only its own GPU."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    args = [sys.executable, __file__, "--one", json.dumps({"name": name, "training": training, "dataset": dataset,
                                                           "prefix": prefix})]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"setting": name, "training": training, "error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", default=[], help="name=<JSON FinetuneConfig fields>")
    parser.add_argument("--base", default="{}", help="JSON FinetuneConfig fields shared by every setting")
    parser.add_argument("--prefix", default="experiments/search")
    parser.add_argument("--per-gpu", type=int, default=1, help="runs sharing each GPU at a time (small models)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        job = json.loads(args.one)
        print(json.dumps(one_run(job["name"], job["training"], job["dataset"], job["prefix"])))
        return
    base = json.loads(args.base)
    settings = {}
    for item in args.setting:
        name, _, raw = item.partition("=")
        settings[name] = base | json.loads(raw or "{}")
    dataset = data_prep.run(data_prep.Config(), ObjectStore()).dataset.model_dump(mode="json")
    gpus = gpu_count()
    out = Path(os.environ["OUT"]) / "finetune_search.jsonl" if os.environ.get("OUT") else None
    slots = [gpu for gpu in range(gpus) for _ in range(args.per_gpu)] if gpus else [None]
    free: list[int | None] = list(slots)

    def run(item: tuple[str, dict]) -> dict:
        gpu = free.pop()
        try:
            row = launch(item[0], item[1], dataset, args.prefix, gpu)
        finally:
            free.append(gpu)
        print(json.dumps(row), flush=True)
        if out is not None:
            with open(out, "a") as handle:
                handle.write(json.dumps(row) + "\n")
        return row

    with ThreadPoolExecutor(len(slots)) as pool:
        rows = list(pool.map(run, settings.items()))
    print("\n| setting | training | best val Dice (tuned threshold) | last | curve (step: tuned) | train s |")
    print("|---|---|---:|---:|---|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['setting']} | `{json.dumps(row['training'])}` | failed | | | |")
            continue
        curve = ", ".join(f"{step}: {tuned:.3f}" for step, _, tuned in row["curve"])
        print(f"| {row['setting']} | `{json.dumps(row['training'])}` | {row['best_val_dice_tuned']:.4f} | "
              f"{row['last_val_dice_tuned']:.4f} | {curve} | {row['train_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
