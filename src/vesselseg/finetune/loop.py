"""The fine-tuning recipe every rank runs: set up, resume, train, validate, checkpoint, publish.

    1. join the process group (NCCL on GPUs, gloo on the CPU); rank 0 decides: finished already, resume from
       which checkpoint, or start fresh
    2. local rank 0 fetches the train/val splits (never test), the base model and the checkpoint; the others wait
    3. build `apply_training_recipe(load_base_model(...))` from the same seed on every rank, hand it to DeepSpeed,
       load the checkpoint (model, optimizer, scheduler; the step is the data position, see data.py)
    4. each step: micro-batches with gradient accumulation, one JSONL row of global numbers; validation Dice every
       `val_every`; `engine.save_checkpoint` every `checkpoint_every`, published by rank 0 as a step artifact
    5. the final artifact (last or best step), then the local folder is removed
Everything that touches the object store goes through the `RunPublisher` the stage hands over (publisher.py).
Randomness inside the model (dropout) is reseeded from (seed, step, micro-batch) before every forward pass, so a
resumed run needs no saved generator state and a run on more ranks draws the same numbers.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from vesselseg.data import PreparedDataset
from vesselseg.finetune import checkpoint as ckpt
from vesselseg.finetune.base_model import config_digest, load_base_model
from vesselseg.finetune.config import FinetuneConfig
from vesselseg.finetune.data import DataOrder, MicroBatches, loader, split_samples
from vesselseg.finetune.engine import initialize
from vesselseg.finetune.errors import TrainingError
from vesselseg.finetune.job import TrainJob, TrainResult, TrainSummary
from vesselseg.finetune.launch import LAUNCHED_AT_ENV
from vesselseg.finetune.log import Progress, TrainLog
from vesselseg.finetune.publisher import RunPublisher
from vesselseg.finetune.safe_load import deepspeed_loads
from vesselseg.finetune.validation import validation_dice
from vesselseg.model import apply_training_recipe
from vesselseg.storage import InputRef

log = logging.getLogger(__name__)

SHM_COMM_OP = "deepspeed_shm_comm"


def _setup_distributed() -> torch.device:
    """The device DeepSpeed's accelerator trains on (CUDA unless DS_ACCELERATOR=cpu), with its process group.

    Chosen by the accelerator, not by the precision: fp32 on GPUs is a valid run, and DeepSpeed moves the module to
    its accelerator whatever device the batches are on.
    """
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    on_gpu = get_accelerator().device_name() == "cuda"
    if not on_gpu:
        # As the loss falls, gradients and optimizer moments underflow into subnormal floats, which x86 CPUs compute
        # in microcode: the demo's steps slowed from ~1 s to ~2.5 s after step 85. Flushing them to zero kept its
        # losses and validation Dice to the printed digits (benchmarks/results/demo_profile.md).
        torch.set_flush_denormal(True)
    if not on_gpu and int(os.environ.get("WORLD_SIZE", 1)) == 1:
        # DeepSpeed JIT-compiles its shared-memory all-reduce for every CPU process group (~25 s of a compiler on a
        # fresh machine, and a failure where there is none); a single rank has no peer to reduce with. Marking the
        # op incompatible in DeepSpeed's probed table, which it keeps per process, makes it use gloo alone.
        deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    if on_gpu:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def _broadcast(value: Any) -> Any:
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _seed_step(seed: int, step: int, micro_batch: int) -> None:
    torch.manual_seed(int(np.random.SeedSequence([seed, step, micro_batch]).generate_state(1)[0]))


def forward_context(config: FinetuneConfig, on_gpu: bool) -> AbstractContextManager[Any]:
    """Where a training forward runs: under CPU bf16 autocast when `config.autocast` asks for it (GPUs train in
    DeepSpeed's bf16 instead, see `precision`)."""
    if config.autocast == "bf16" and not on_gpu:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def check_finite(step: int, loss: float, grad_norm: Any) -> None:
    """Stops the run at a non-finite loss or gradient norm, before any checkpoint can hold the step's weights.

    DeepSpeed reports an inf/NaN global norm as -1 and, with its overflow scan off (see engine.py), applies the
    step anyway, so continuing would only train on garbage.
    """
    norm = None if grad_norm is None else float(grad_norm)
    if not math.isfinite(loss) or (norm is not None and (not math.isfinite(norm) or norm < 0)):
        shown = "inf/NaN" if norm is not None and norm < 0 else norm
        raise TrainingError(
            f"step {step}: loss {loss}, gradient norm {shown}; stopping before this step reaches a checkpoint "
            "(those already published are kept). Lower lr or check the inputs"
        )


class Trainer:
    def __init__(self, job: TrainJob, publisher: RunPublisher) -> None:
        self.job, self.config, self.publisher = job, job.config, publisher
        self.device = _setup_distributed()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if self.world != job.world_size:
            raise TrainingError(
                f"{self.world} ranks joined but the stage planned the run for {job.world_size} (batch sizes and data "
                "order depend on it); launch as many ranks as it planned"
            )
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.accumulation = self.config.gradient_accumulation(self.world)
        # Ranks started by another launcher each planned their own folder name: rank 0's is the one.
        self.workdir = Path(_broadcast(job.workdir))
        self.started = time.monotonic()
        # Launch to here: torchrun, interpreters, imports, the process group (what a launch costs before any work).
        self.started_after = time.time() - float(os.environ.get(LAUNCHED_AT_ENV, time.time()))

    # ----- set-up -----
    def _plan(self) -> tuple[TrainResult | None, InputRef | None]:
        """Rank 0's look at the store: the finished result, or the checkpoint to resume from (or none)."""
        if self.config.resume == "never":
            return None, None
        if self.config.resume == "auto":
            finished = self.publisher.finished()
            if finished is not None:
                return finished, None
            steps = self.publisher.published_steps()
            return None, self.publisher.step(steps[-1]) if steps else None
        return None, self.publisher.resolve(self.config.resume)

    def _prepare_local(self, resume: InputRef | None) -> None:
        """Local rank 0 fills the work folder; the other ranks of the node read it after the barrier."""
        if self.local_rank == 0:
            shutil.rmtree(self.workdir, ignore_errors=True)
            splits = [self.config.val_split] if self.config.val_every else []
            self.publisher.fetch_inputs(["train", *splits], self.workdir / "dataset", self.workdir / "base")
            if resume is not None:
                self.publisher.fetch(resume, self.workdir / "resume")
        dist.barrier()

    def _build(self) -> None:
        config = self.config
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        model, self.processor = load_base_model(
            config.base_model,
            config.model_overrides,
            config.sam2,
            folder=self.workdir / "base",
            device=self.device,
            dtype=torch.bfloat16 if self.job.precision == "bf16" else torch.float32,
            # The artifact the run key hashed, already fetched by local rank 0: no rank resolves the spec again.
            ref=self.job.base_model,
        )
        model = apply_training_recipe(model)
        self.model_config = model.config
        self.engine = initialize(model, config, self.world, self.job.precision, self.device.type == "cuda")

    def _resume(self, resume: InputRef | None) -> tuple[int, ckpt.TrainState | None, TrainLog]:
        if resume is None:
            return 0, None, TrainLog()
        folder = self.workdir / "resume"
        state = ckpt.read_state(folder)
        ckpt.check_compatible(
            state, resume.uri, self.model_config, folder / ckpt.MODEL_DIR, self.world, self.config.zero_stage
        )
        # DeepSpeed unpickles the rank files; only tensors and its own types may come out of them.
        with deepspeed_loads(f"Resuming never unpickles anything else; start fresh with resume: never ({resume.uri})"):
            path, client = self.engine.load_checkpoint(str(folder / ckpt.CHECKPOINT_DIR))
        if path is None or client.get("step") != state.step:
            raise TrainingError(f"checkpoint {resume.uri}: DeepSpeed could not load {folder / ckpt.CHECKPOINT_DIR}")
        rows = [r for r in TrainLog.read(folder / ckpt.LOG_FILE).rows if r["step"] <= state.step]
        return state.step, state, TrainLog(rows)

    # ----- training -----
    def run(self) -> TrainResult:
        finished, resume = _broadcast(self._plan() if self.rank == 0 else None)
        if finished is not None:
            if self.rank == 0:
                log.info("run %s is already complete at %s; nothing to train", self.job.run_key, finished.training.uri)
            return finished
        fetch_started = time.monotonic()
        self._prepare_local(resume)
        self.fetch_s = time.monotonic() - fetch_started
        result = self._train(resume)
        # After a failure the folder stays for the stage (or the next launch) to remove: the peers may be dead.
        dist.barrier()
        if self.local_rank == 0:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return result

    def _train(self, resume: InputRef | None) -> TrainResult:
        config = self.config
        build_started = time.monotonic()
        self._build()
        start, state, train_log = self._resume(resume)
        if self.rank == 0:
            log.info(
                "ready after %.0f s: %.0f s to launch %d ranks, %.0f s to fetch inputs, %.0f s to build and load",
                time.monotonic() - self.started + self.started_after,
                self.started_after,
                self.world,
                self.fetch_s,
                time.monotonic() - build_started,
            )
        self.state = state or ckpt.TrainState(
            step=0,
            run_key=self.job.run_key,
            model_digest=config_digest(self.model_config),
            world_size=self.world,
            zero_stage=config.zero_stage,
            precision=self.job.precision,
        )
        if start:
            self.state.resumed_from.append(start)
        self.train_log = train_log
        dataset = PreparedDataset(self.workdir / "dataset")
        train_samples = split_samples(dataset, "train")
        val_samples = split_samples(dataset, config.val_split) if config.val_every else []
        order = DataOrder(len(train_samples), config.global_batch_size, config.micro_batch_size, config.seed)
        batches = iter(
            loader(
                MicroBatches(
                    dataset,
                    train_samples,
                    self.processor,
                    order,
                    config.augment,
                    start + 1,
                    config.steps,
                    self.accumulation,
                    self.rank,
                    self.world,
                ),
                config.num_workers,
            )
        )
        progress = Progress(
            start + 1, config.steps, config.log_every, self.rank == 0, os.environ.get("VESSELSEG_TTY") == "1"
        )
        if start:
            progress.note(f"resumed from {resume.uri} at step {start}")
        earlier_s, launch_started = self.state.train_s, time.monotonic()
        dtype = torch.bfloat16 if self.job.precision == "bf16" else None
        for step in range(start + 1, config.steps + 1):
            row = self._step(step, batches, dtype)
            self.train_log.add(row)
            progress.step(row)
            improved = False
            if config.val_every and (step % config.val_every == 0 or step == config.steps):
                scores = validation_dice(
                    self.engine.module, self.processor, dataset, val_samples, config.micro_batch_size, self.device
                )
                self.train_log.add({"step": step, **scores})
                progress.note(
                    f"step {step}: validation Dice {scores['val_dice']:.4f} (tuned {scores['val_dice_tuned']:.4f})"
                )
                if self.state.best_val_dice is None or scores["val_dice"] > self.state.best_val_dice:
                    self.state.best_step, self.state.best_val_dice, improved = step, scores["val_dice"], True
            self.state.step = step
            if (
                step % config.checkpoint_every == 0
                or step == config.steps
                or (improved and config.final_model == "best")
            ):
                self.state.train_s = earlier_s + time.monotonic() - launch_started
                self._checkpoint(step)
        progress.close()
        result = self._publish_final() if self.rank == 0 else None
        return _broadcast(result)

    def _step(self, step: int, batches: Any, dtype: torch.dtype | None) -> dict[str, Any]:
        engine = self.engine
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        lr = engine.get_lr()[0]
        # Summed on the device: reading each micro-batch's losses back would stall the CPU before it could queue the
        # next micro-batch's kernels.
        totals = torch.zeros(6, dtype=torch.float64, device=self.device)
        has_cldice = False
        for accumulation in range(self.accumulation):
            batch_step, batch = next(batches)
            if batch_step != step:
                raise TrainingError(f"data loader out of step: expected step {step}, got {batch_step}")
            _seed_step(self.config.seed, step, accumulation * self.world + self.rank)
            batch = batch.to(self.device, dtype)
            with forward_context(self.config, self.device.type == "cuda"):
                output = engine(**batch)
            engine.backward(output.loss)
            engine.step()
            has_cldice = output.mask_cldice_loss is not None
            parts = [output.loss, output.lm_loss, output.mask_bce_loss, output.mask_dice_loss, output.mask_cldice_loss]
            values = [totals.new_zeros(()) if p is None else p.detach().double() for p in parts]
            totals += torch.stack([*values, batch.attention_mask.sum().double()])
        dist.all_reduce(totals)
        memory = torch.tensor([_peak_memory_gb(self.device)], device=self.device)
        dist.all_reduce(memory, op=dist.ReduceOp.MAX)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        micro_batches = self.world * self.accumulation
        loss, lm, bce, dice, cldice, tokens = totals.cpu().tolist()
        grad_norm = engine.get_global_grad_norm()
        check_finite(step, loss / micro_batches, grad_norm)
        return {
            "step": step,
            "loss": loss / micro_batches,
            "loss_lm": lm / micro_batches,
            "loss_bce": bce / micro_batches,
            "loss_dice": dice / micro_batches,
            "loss_cldice": cldice / micro_batches if has_cldice else None,
            "lr": lr,
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "step_s": seconds,
            "samples_per_s": self.config.global_batch_size / seconds,
            "tokens_per_s": tokens / seconds,
            "memory_gb": float(memory.item()),
        }

    # ----- checkpoints -----
    def _step_folder(self, step: int) -> Path:
        return self.workdir / "steps" / f"step-{step}"

    def _checkpoint(self, step: int) -> None:
        """Every rank writes its ZeRO shards; rank 0 adds model/, log and state and publishes the folder."""
        folder = self._step_folder(step)
        self.engine.save_checkpoint(str(folder / ckpt.CHECKPOINT_DIR), tag=ckpt.tag(step), client_state={"step": step})
        dist.barrier()
        if self.rank != 0:
            return
        ckpt.write_model_folder(self.model_config, self.processor, folder / ckpt.MODEL_DIR)
        self.train_log.write(folder / ckpt.LOG_FILE)
        (folder / ckpt.STATE_FILE).write_text(self.state.model_dump_json(indent=2))
        ref = self.publisher.publish_step(folder, self.state)
        log.info("checkpoint of step %d published at %s", step, ref.uri)
        protect = {self.state.best_step} if self.config.final_model == "best" and self.state.best_step else set()
        self.publisher.prune(self.config.keep_checkpoints, protect)
        for old in (self.workdir / "steps").iterdir():
            if old != folder and old.name != f"step-{self.state.best_step}":
                shutil.rmtree(old)

    def _publish_final(self) -> TrainResult:
        config = self.config
        final_step = self.state.best_step if config.final_model == "best" else config.steps
        source = self._step_folder(final_step)
        if not source.is_dir():
            # The best step was saved before this launch resumed; its artifact is protected from pruning.
            self.publisher.fetch(self.publisher.step(final_step), source)
        staging = self.workdir / "final"
        ckpt.assemble(source, staging)
        self.train_log.write(staging / ckpt.LOG_FILE)
        summary = self._summary(final_step)
        (staging / ckpt.SUMMARY_FILE).write_text(summary.model_dump_json(indent=2))
        ref = self.publisher.publish_final(staging, summary)
        log.info("training artifact published at %s", ref.uri)
        resumed = self.state.resumed_from[-1] if self.state.resumed_from else None
        return TrainResult(training=ref, summary=summary, resumed_from_step=resumed)

    def _summary(self, final_step: int) -> TrainSummary:
        config = self.config
        steps = self.train_log.steps()
        last = steps[-1]
        validations = self.train_log.validations()
        return TrainSummary(
            run_key=self.job.run_key,
            steps=config.steps,
            final_model=config.final_model,
            final_step=final_step,
            final_loss=last["loss"],
            final_loss_parts={k: last[k] for k in ("loss_lm", "loss_bce", "loss_dice", "loss_cldice")},
            best_step=self.state.best_step,
            best_val_dice=self.state.best_val_dice,
            last_val_dice=validations[-1]["val_dice"] if validations else None,
            train_s=self.state.train_s,
            wall_s=time.monotonic() - self.started,
            mean_samples_per_s=float(np.mean([r["samples_per_s"] for r in steps])),
            mean_tokens_per_s=float(np.mean([r["tokens_per_s"] for r in steps])),
            peak_memory_gb=max(r["memory_gb"] for r in steps),
            world_size=self.world,
            zero_stage=config.zero_stage,
            precision=self.job.precision,
            global_batch_size=config.global_batch_size,
            micro_batch_size=config.micro_batch_size,
            gradient_accumulation=self.accumulation,
            resumed_from=self.state.resumed_from,
            device=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            config=config.model_dump(mode="json"),
        )


def train(job: TrainJob, publisher: RunPublisher) -> TrainResult:
    """Runs the job on this rank, fetching and publishing through `publisher`; every rank returns the same result."""
    return Trainer(job, publisher).run()
