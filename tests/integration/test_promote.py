"""The promote gate against the real object store: better models are promoted, others refused, with both numbers."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vesselseg.kfp_glue import run_stage
from vesselseg.promote import ChampionError, ChampionRecord, Decision, PromoteConfig, promote
from vesselseg.stages import data_prep
from vesselseg.storage import InputRef, ObjectStore, StoreSettings, publish_dir

MODEL_A = InputRef(uri="s3://mlpipeline/tests/models/a/", manifest_sha256="a" * 64)
MODEL_B = InputRef(uri="s3://mlpipeline/tests/models/b/", manifest_sha256="b" * 64)
MODEL_C = InputRef(uri="s3://mlpipeline/tests/models/c/", manifest_sha256="c" * 64)
FP = "f" * 64


def summary(
    dice: float,
    ci: tuple[float, float],
    *,
    predictor: str = "sa2va",
    split: str = "test",
    n: int = 20,
    honesty: list[dict[str, Any]] | None = None,
) -> bytes:
    """An evaluation summary in the format `vesselseg.evaluate.evaluate` writes."""
    row = {"dice": dice, "iou": dice / (2 - dice), "accuracy": 0.96}
    return json.dumps(
        {
            "split": split,
            "n_images": n,
            "averaging": "macro",
            "vessel_fraction": 0.12,
            "fov": "given",
            "metrics": {predictor: row, "all_background": {"dice": 0.0}},
            "metrics_micro": {predictor: row},
            "dice_ci": {predictor: list(ci), "all_background": [0.0, 0.0]},
            "metrics_at_0_5": {predictor: row},
            "thresholds": {predictor: {"level": 128, "threshold": 0.5, "source": "val"}},
            "honesty": honesty
            or [{"name": "prediction_identical_to_truth", "predictor": predictor, "passed": True, "detail": "ok"}],
        }
    ).encode()


@pytest.fixture()
def gate(prefix: str) -> PromoteConfig:
    return PromoteConfig(
        predictor="sa2va", key=f"{prefix}/models/champion.json", history_prefix=f"{prefix}/models/history"
    )


def test_first_model_becomes_champion_then_only_a_clearly_better_one_replaces_it(
    store: ObjectStore, gate: PromoteConfig, prefix: str
) -> None:
    first = promote(store, summary(0.78, (0.75, 0.81)), FP, MODEL_A, gate)
    assert first.promoted and first.previous is None and "no champion yet" in first.reason
    assert ChampionRecord.model_validate_json(store.get_bytes(gate.key)).model == MODEL_A

    # Better on average but inside the champion's CI: not clearly better, so the champion stays.
    close = promote(store, summary(0.805, (0.78, 0.83)), FP, MODEL_B, gate)
    assert not close.promoted and "kept the champion" in close.reason
    assert (close.candidate_dice, close.champion_dice, close.champion_dice_ci_high) == (0.805, 0.78, 0.81)
    worse = promote(store, summary(0.70, (0.66, 0.74)), FP, MODEL_B, gate)
    assert not worse.promoted
    assert ChampionRecord.model_validate_json(store.get_bytes(gate.key)).model == MODEL_A

    better = promote(store, summary(0.83, (0.80, 0.86)), FP, MODEL_B, gate)
    assert better.promoted and better.previous is not None and better.previous.model == MODEL_A
    assert "0.8300 > champion's CI upper bound 0.8100" in better.reason
    champion = ChampionRecord.model_validate_json(store.get_bytes(gate.key))
    assert champion.model == MODEL_B and champion.dice_ci == (0.80, 0.86) and champion.dataset_fingerprint == FP
    history = store.list(gate.history_prefix + "/")
    assert len(history) == 2 and ChampionRecord.model_validate_json(store.get_bytes(history[-1])) == champion


def test_numbers_on_another_test_set_are_not_compared(store: ObjectStore, gate: PromoteConfig) -> None:
    promote(store, summary(0.70, (0.68, 0.72)), FP, MODEL_A, gate)
    other_data = promote(store, summary(0.95, (0.94, 0.96)), "e" * 64, MODEL_B, gate)
    assert not other_data.promoted and other_data.reason.startswith("refused to compare")
    other_split = promote(store, summary(0.95, (0.94, 0.96), split="val"), FP, MODEL_B, gate)
    assert not other_split.promoted and "split 'val'" in other_split.reason
    fewer = promote(store, summary(0.95, (0.94, 0.96), n=10), FP, MODEL_B, gate)
    assert not fewer.promoted
    restart = promote(
        store, summary(0.60, (0.55, 0.65)), "e" * 64, MODEL_B, gate.model_copy(update={"allow_new_dataset": True})
    )
    assert restart.promoted and "champion line restarted" in restart.reason


def test_waived_honesty_checks_block_promotion_and_dry_run_writes_nothing(
    store: ObjectStore, gate: PromoteConfig
) -> None:
    waived = [
        {
            "name": "train_test_overlap",
            "predictor": None,
            "passed": False,
            "allowed": True,
            "detail": "2 test images also in train",
        }
    ]
    refused = promote(store, summary(0.9, (0.88, 0.92), honesty=waived), FP, MODEL_A, gate)
    assert not refused.promoted and "train_test_overlap" in refused.reason and not store.exists(gate.key)
    dry = promote(store, summary(0.9, (0.88, 0.92)), FP, MODEL_A, gate.model_copy(update={"dry_run": True}))
    assert not dry.promoted and "dry run" in dry.reason and not store.exists(gate.key)


def test_unreadable_champion_and_incomplete_summary_are_errors(store: ObjectStore, gate: PromoteConfig) -> None:
    store.put_bytes(gate.key, b'{"not": "a champion"}')
    with pytest.raises(ChampionError, match=rf"s3://mlpipeline/{gate.key} is not a valid ChampionRecord"):
        promote(store, summary(0.9, (0.88, 0.92)), FP, MODEL_A, gate)
    with pytest.raises(ChampionError, match="no predictor 'sa2va'"):
        promote(store, summary(0.9, (0.88, 0.92), predictor="frangi"), FP, MODEL_A, gate)


@dataclass
class KfpArtifactStub:
    """What a KFP component body sees of an artifact: a local path and a metadata dict."""

    path: str
    uri: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def log_metric(self, name: str, value: float) -> None:
        self.metadata[name] = value


def test_component_body_reads_the_dataset_fingerprint_from_the_store(
    store: ObjectStore, prefix: str, tmp_path: Path
) -> None:
    prep = data_prep.run(
        data_prep.Config.model_validate(
            {
                "data": {"synthetic": {"count": 6, "size": 64, "seed": 2}, "split": {"seed": 2}},
                "prefix": f"{prefix}/datasets",
            }
        ),
        store,
    )
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "summary.json").write_bytes(summary(0.8, (0.77, 0.83), predictor="frangi"))
    evaluation, _ = publish_dir(
        store, tmp_path / "evaluation", f"{prefix}/evaluation", kind="evaluation", stage="evaluate", config={}
    )
    files = {name: tmp_path / name for name in ("evaluation.json", "dataset", "model", "decision", "metrics")}
    files["evaluation.json"].write_text(evaluation.model_dump_json())
    files["dataset"].write_text(prep.dataset.model_dump_json())
    files["model"].write_text(MODEL_A.model_dump_json())
    arts = {name.removesuffix(".json"): KfpArtifactStub(str(path)) for name, path in files.items()}
    overrides = {"key": f"{prefix}/champion.json", "history_prefix": f"{prefix}/history"}
    decision = run_stage("promote", {**arts, "predictor": "frangi", "overrides": overrides})
    assert decision.promoted and decision.dataset_fingerprint == prep.summary.fingerprint
    assert json.loads(files["decision"].read_text())["record"]["dataset_fingerprint"] == prep.summary.fingerprint
    assert arts["metrics"].metadata == {"promote.promoted": 1, "promote.candidate_dice": 0.8}
    assert arts["decision"].metadata["promoted"] is True


class ReadTogetherStore(ObjectStore):
    """The real store, with each look at the champion record held until both runs have looked: the interleaving a
    race needs (both decide against the same champion, then both write), made certain instead of left to timing."""

    def __init__(self, settings: StoreSettings, key: str, barrier: threading.Barrier) -> None:
        super().__init__(settings)
        self.key, self.barrier = key, barrier

    def _meet(self, key: str) -> None:
        if key == self.key:
            self.barrier.wait(timeout=30)

    def exists(self, key: str) -> bool:
        found = super().exists(key)
        self._meet(key)
        return found

    def get_bytes(self, key: str) -> bytes:
        data = super().get_bytes(key)
        self._meet(key)
        return data

    def get_bytes_and_etag(self, key: str) -> tuple[bytes, str]:
        got = super().get_bytes_and_etag(key)
        self._meet(key)
        return got


@pytest.mark.parametrize("existing", [False, True], ids=["first-champion", "replacing-a-champion"])
def test_of_two_concurrent_promotions_exactly_one_wins(
    store_settings: StoreSettings, store: ObjectStore, gate: PromoteConfig, existing: bool
) -> None:
    if existing:
        promote(store, summary(0.70, (0.66, 0.74)), FP, MODEL_A, gate)
    barrier = threading.Barrier(2)
    results: dict[str, Decision | ChampionError] = {}

    def run(name: str, model: InputRef, dice: float) -> None:
        try:
            racing = ReadTogetherStore(store_settings, gate.key, barrier)
            results[name] = promote(racing, summary(dice, (dice - 0.02, dice + 0.02)), FP, model, gate)
        except ChampionError as err:
            results[name] = err

    threads = [threading.Thread(target=run, args=args) for args in [("b", MODEL_B, 0.85), ("c", MODEL_C, 0.86)]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [r for r in results.values() if isinstance(r, Decision) and r.promoted]
    losers = [r for r in results.values() if isinstance(r, ChampionError)]
    assert len(winners) == 1 and len(losers) == 1, f"both runs promoted or neither: {results}"
    assert "changed while deciding (another run promoted concurrently)" in str(losers[0])
    champion = ChampionRecord.model_validate_json(store.get_bytes(gate.key))
    assert champion == winners[0].record
    history = store.list(gate.history_prefix + "/")
    assert len(history) == 1 + existing, "the losing run's history entry was not withdrawn"
    assert ChampionRecord.model_validate_json(store.get_bytes(history[-1])) == champion
