"""Inference over a dataset's images into a prediction set, resumable image by image.

Finished images live in a resume state keyed by model, dataset and every setting that changes a map: a local
folder (`probs/<id>.png` in the prediction-set format, written by `predictions.write_map`, then `records/<id>.json`
holding the PNG's sha256, written last) mirrored to the object store, so that a re-run — on this machine or in a
fresh pod — skips every image whose record and PNG verify.
Micro-batches are fixed from the full, sorted image list; a batch is skipped only when all its images are done,
so a resumed run computes each image in exactly the batch an uninterrupted run would have. Publishing links the
state's maps into the prediction set as they are (no decoding, no encoding).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from vesselseg.errors import StorageError
from vesselseg.infer.config import InferConfig
from vesselseg.infer.errors import InferError
from vesselseg.infer.footprint import Footprint, footprint_of
from vesselseg.infer.images import ImageSource
from vesselseg.infer.pipelined import ImageResult, Task
from vesselseg.infer.predictor import PredictorSpec
from vesselseg.infer.replicas import execute
from vesselseg.infer.source import dtype_of, meta_model
from vesselseg.infer.strategy import Plan, choose_plan, log_plan, visible_gpus
from vesselseg.predictions import PredictionWriter, PredictorInfo, map_path, write_map
from vesselseg.storage import ObjectStore

log = logging.getLogger(__name__)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_id: str
    split: str
    n_seg: int
    text: str
    height: int
    width: int
    prob_sha256: str


class ResumeState:
    """Finished images: a local folder, mirrored under `remote_prefix` in `store` when one is given."""

    def __init__(self, root: Path, store: ObjectStore | None = None, remote_prefix: str | None = None) -> None:
        self.root = root
        self.store = store
        self.remote = None if remote_prefix is None else remote_prefix.rstrip("/") + "/"
        (root / "probs").mkdir(parents=True, exist_ok=True)
        (root / "records").mkdir(parents=True, exist_ok=True)

    def prob_path(self, sample_id: str) -> Path:
        return map_path(self.root, sample_id)

    def _record_path(self, sample_id: str) -> Path:
        return self.root / "records" / f"{sample_id}.json"

    def _verified(self, record_path: Path) -> Record | None:
        try:
            record = Record.model_validate_json(record_path.read_text())
            blob = self.prob_path(record.sample_id).read_bytes()
        except (OSError, ValueError):
            return None
        return record if hashlib.sha256(blob).hexdigest() == record.prob_sha256 else None

    def finished(self) -> dict[str, Record]:
        """Records whose PNG is present and matches its sha256; anything else counts as not done."""
        records = (self._verified(p) for p in sorted((self.root / "records").glob("*.json")))
        return {r.sample_id: r for r in records if r is not None}

    def pull(self) -> int:
        """Downloads finished images the object store has and this folder lacks; returns how many."""
        if self.store is None or self.remote is None:
            return 0
        local = self.finished()
        pulled = 0
        for key in self.store.list(self.remote + "records/"):
            sample_id = key.rsplit("/", 1)[1].removesuffix(".json")
            if sample_id in local:
                continue
            record = Record.model_validate_json(self.store.get_bytes(key))
            png = f"{self.remote}probs/{sample_id}.png"
            try:
                self.store.download_file(png, self.prob_path(sample_id))
            except StorageError as err:  # a PNG that never finished uploading: the image is simply predicted again
                log.warning("resume: cannot fetch %s (%s); it will be predicted again", png, err)
                continue
            _atomic_write(self._record_path(sample_id), record.model_dump_json().encode())
            pulled += self._verified(self._record_path(sample_id)) is not None
        return pulled

    def commit(self, result: ImageResult, split: str) -> None:
        sha256 = write_map(self.root, result.prob)
        record = Record(
            sample_id=result.sample_id,
            split=split,
            n_seg=result.n_seg,
            text=result.text,
            height=result.prob.shape[0],
            width=result.prob.shape[1],
            prob_sha256=sha256,
        )
        _atomic_write(self._record_path(result.sample_id), record.model_dump_json().encode())
        if self.store is not None and self.remote is not None:
            # The record goes last: remotely, too, a record means its PNG is complete.
            self.store.upload_file(self.prob_path(result.sample_id), f"{self.remote}probs/{result.sample_id}.png")
            self.store.upload_file(self._record_path(result.sample_id), f"{self.remote}records/{result.sample_id}.json")

    def clear(self) -> None:
        """Removes the state once its images are published (the artifact now holds them)."""
        if self.store is not None and self.remote is not None:
            self.store.delete_prefix(self.remote)
        shutil.rmtree(self.root, ignore_errors=True)


def _atomic_write(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def make_tasks(sample_ids: list[str], batch_size: int) -> list[Task]:
    ids = sorted(sample_ids)
    return [Task(i // batch_size, tuple(ids[i : i + batch_size])) for i in range(0, len(ids), batch_size)]


def model_footprint(spec: PredictorSpec, on_gpu: bool, image_hw: tuple[int, int]) -> Footprint:
    dtype = dtype_of(spec.dtype, on_gpu)
    if spec.backend == "remote_code":
        # An official folder's classes are unknown until its code runs: plan on the size of its weight files.
        folder = Path(spec.source.path)
        files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
        return Footprint.opaque(sum(p.stat().st_size for p in files))
    return footprint_of(meta_model(spec.source.config(), dtype), dtype, image_hw)


def make_plan(spec: PredictorSpec, config: InferConfig, image_hw: tuple[int, int]) -> Plan:
    """The plan for this machine's GPUs (none for strategy cpu), logged with its reason."""
    gpus = [] if config.strategy == "cpu" else visible_gpus()
    footprint = model_footprint(spec, bool(gpus), image_hw)
    if spec.backend == "remote_code":
        # An official model's own code runs as its authors run it: one call at a time per copy.
        plan = choose_plan(footprint, gpus, config.model_copy(update={"in_flight": 1}))
        if plan.strategy == "pipelined":
            plan = plan.model_copy(update={"strategy": "sharded"})
    else:
        plan = choose_plan(footprint, gpus, config)
    log_plan(plan)
    return plan


class RunStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_images: int
    computed: int
    resumed: int
    seconds: float
    images_per_s: float
    peak_gib: dict[int, float]


def predict_into(
    state: ResumeState,
    plan: Plan,
    spec: PredictorSpec,
    images: ImageSource,
    splits_of: dict[str, str],
    batch_size: int,
    shard: tuple[int, int] | None = None,
) -> RunStats:
    """Predicts every image of `splits_of` (id → split) not already finished in `state`; `shard` = (index, count)
    keeps every count-th micro-batch from index on, for fan-out over several nodes."""
    tasks = make_tasks(list(splits_of), batch_size)
    if shard is not None:
        index, count = shard
        tasks = tasks[index::count]
    done = state.finished()
    pending = [t for t in tasks if not all(i in done for i in t.sample_ids)]
    n_images = sum(len(t.sample_ids) for t in tasks)
    resumed = n_images - sum(len(t.sample_ids) for t in pending)
    if resumed:
        log.info(
            "resume: %d of %d images already done and verified; %d to predict", resumed, n_images, n_images - resumed
        )
    if not pending:
        return RunStats(n_images=n_images, computed=0, resumed=resumed, seconds=0.0, images_per_s=0.0, peak_gib={})
    with tqdm(total=n_images - resumed, desc=f"infer ({plan.strategy})", unit="img", mininterval=2) as bar:

        def commit(results: list[ImageResult]) -> None:
            for result in results:
                state.commit(result, splits_of[result.sample_id])
            bar.update(len(results))

        execution = execute(plan, spec, images, pending, commit)
    log.info("infer: %d images in %.1f s, %.2f images/s", execution.images, execution.seconds, execution.images_per_s)
    return RunStats(
        n_images=n_images,
        computed=execution.images,
        resumed=resumed,
        seconds=execution.seconds,
        images_per_s=execution.images_per_s,
        peak_gib={d: round(b / (1 << 30), 2) for d, b in execution.peak_bytes.items()},
    )


def finished_records(state: ResumeState, sample_ids: list[str]) -> list[Record]:
    """The records of `sample_ids`, sorted; every one must be finished."""
    done = state.finished()
    missing = sorted(i for i in sample_ids if i not in done)
    if missing:
        raise InferError(
            f"{len(missing)} images are not predicted yet (first: {missing[:3]}); run the missing shards first"
        )
    return [done[i] for i in sorted(sample_ids)]


def write_prediction_set(state: ResumeState, records: list[Record], out_dir: Path, info: PredictorInfo) -> None:
    """The prediction-set folder from finished images, whose maps the state already holds in the set's format."""
    writer = PredictionWriter(out_dir)
    for record in records:
        writer.adopt(
            record.sample_id,
            record.split,
            state.prob_path(record.sample_id),
            record.height,
            record.width,
            n_seg=record.n_seg,
            text=record.text,
        )
    writer.close(info)


def records_summary(records: list[Record]) -> dict[str, object]:
    zero = [r.sample_id for r in records if r.n_seg == 0]
    return {
        "images": len(records),
        "zero_seg_images": len(zero),
        "zero_seg_examples": zero[:5],
        "multi_seg_images": sum(r.n_seg > 1 for r in records),
        "max_seg": max((r.n_seg for r in records), default=0),
    }
