"""The promote gate of scheduled retraining: a new model replaces the champion only if it is clearly better
(the library half of the `promote` stage, vesselseg.stages.promote).

Rule, exactly: the candidate is promoted iff its macro Dice on the test split is strictly greater than the
upper bound of the champion's 95 % bootstrap CI of macro Dice, both computed by `vesselseg.evaluate` on
the same test split of the same dataset (equal dataset fingerprints, which hash every sample's id, split
and pixels; equal split names and image counts). Anything else is not compared: a different dataset or
split is refused (unless `allow_new_dataset`, which then starts a new champion line), and so is a
candidate whose evaluation waived an honesty check. With no champion yet, the candidate becomes the first.

The champion record is `models/champion.json` in the object store; each promotion first archives the new
record under `models/history/`, then replaces `champion.json`, so the history is never behind the champion.
The replacement is a conditional write on the version the decision read (S3 If-Match, or If-None-Match for the
first champion): of two runs promoting at once, one wins and the other fails naming the conflict, and its history
entry is withdrawn.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

from pydantic import BaseModel, ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.errors import VesselsegError
from vesselseg.evaluate.evaluate import EvaluationSummary
from vesselseg.storage import InputRef, ObjectStore
from vesselseg.storage.artifact import code_version
from vesselseg.storage.object_store import WriteConflict

log = logging.getLogger(__name__)

RULE = (
    "promote iff candidate macro Dice > upper bound of the champion's 95% bootstrap CI of macro Dice, "
    "same dataset fingerprint, split and image count"
)


class ChampionError(VesselsegError):
    """The gate cannot decide: unreadable champion record or candidate without the numbers it needs."""


class ChampionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    model: InputRef = Field(description="the promoted model artifact")
    predictor: str = Field(description="its name in the evaluation summary")
    dataset_fingerprint: str
    split: str
    n_images: int
    dice: float = Field(description="macro Dice on the split")
    dice_ci: tuple[float, float] = Field(description="95% bootstrap CI of the macro Dice")
    summary_sha256: str = Field(description="sha256 of the evaluation summary JSON the numbers come from")
    promoted_at: str
    code_version: str


class PromoteConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    predictor: str = Field(description="which predictor of the evaluation summary is the candidate")
    key: str = "models/champion.json"
    history_prefix: str = "models/history"
    allow_new_dataset: bool = Field(
        False, description="a candidate on another dataset/split starts a new champion line"
    )
    dry_run: bool = Field(False, description="decide and report, write nothing")


class Decision(BaseModel):
    promoted: bool
    reason: str
    rule: str = RULE
    candidate_dice: float
    candidate_dice_ci: tuple[float, float]
    champion_dice: float | None = None
    champion_dice_ci_high: float | None = None
    dataset_fingerprint: str
    split: str
    champion_uri: str
    previous: ChampionRecord | None = None
    record: ChampionRecord


def candidate_record(
    summary: EvaluationSummary, summary_sha256: str, predictor: str, fingerprint: str, model: InputRef
) -> ChampionRecord:
    if predictor not in summary.metrics:
        raise ChampionError(f"evaluation summary has no predictor {predictor!r}; it has {', '.join(summary.metrics)}")
    dice = summary.metrics[predictor].get("dice")
    ci = summary.dice_ci.get(predictor) or []
    if dice is None or len(ci) != 2 or None in ci:
        raise ChampionError(
            f"evaluation summary lacks the macro Dice or its CI for {predictor!r}: dice={dice}, ci={ci}"
        )
    return ChampionRecord(
        model=model,
        predictor=predictor,
        dataset_fingerprint=fingerprint,
        split=summary.split,
        n_images=summary.n_images,
        dice=float(dice),
        dice_ci=(float(ci[0]), float(ci[1])),  # type: ignore[arg-type]
        summary_sha256=summary_sha256,
        promoted_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        code_version=code_version(),
    )


def decide(
    candidate: ChampionRecord, champion: ChampionRecord | None, summary: EvaluationSummary, allow_new_dataset: bool
) -> tuple[bool, str]:
    """(promote?, why). Pure: the same inputs always give the same decision."""
    waived = [c for c in summary.honesty if not c.passed and (c.predictor in (None, candidate.predictor))]
    if waived:
        names = ", ".join(f"{c.name} ({c.detail})" for c in waived)
        return False, f"refused: the evaluation waived honesty checks for {candidate.predictor!r}: {names}"
    if champion is None:
        return True, "no champion yet: the candidate becomes the first"
    same = (
        champion.dataset_fingerprint == candidate.dataset_fingerprint
        and champion.split == candidate.split
        and champion.n_images == candidate.n_images
    )
    if not same:
        what = (
            f"champion on dataset {champion.dataset_fingerprint[:16]} split {champion.split!r} "
            f"({champion.n_images} images), "
            f"candidate on {candidate.dataset_fingerprint[:16]} split {candidate.split!r} ({candidate.n_images} images)"
        )
        if allow_new_dataset:
            return True, f"new dataset, champion line restarted (allow_new_dataset): {what}"
        return False, f"refused to compare: {what}; numbers on different test sets say nothing about each other"
    bound = champion.dice_ci[1]
    if candidate.dice > bound:
        return True, f"candidate Dice {candidate.dice:.4f} > champion's CI upper bound {bound:.4f}"
    return False, f"kept the champion: candidate Dice {candidate.dice:.4f} ≤ champion's CI upper bound {bound:.4f}"


def read_champion(store: ObjectStore, key: str) -> tuple[ChampionRecord | None, str | None]:
    """The champion record and the ETag of the version read (None, None when there is no champion yet)."""
    if not store.exists(key):
        return None, None
    raw, etag = store.get_bytes_and_etag(key)
    try:
        return ChampionRecord.model_validate_json(raw), etag
    except ValueError as err:
        raise ChampionError(f"champion record {store.uri(key)} is not a valid ChampionRecord: {err}") from err


def promote(
    store: ObjectStore,
    summary_json: bytes,
    fingerprint: str,
    model: InputRef,
    config: PromoteConfig,
) -> Decision:
    summary = EvaluationSummary.model_validate_json(summary_json)
    candidate = candidate_record(
        summary, hashlib.sha256(summary_json).hexdigest(), config.predictor, fingerprint, model
    )
    champion, etag = read_champion(store, config.key)
    promoted, reason = decide(candidate, champion, summary, config.allow_new_dataset)
    if promoted and not config.dry_run:
        body = candidate.model_dump_json(indent=2).encode()
        # Microseconds keep the history listing in promotion order.
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        history = f"{config.history_prefix.strip('/')}/{stamp}-{candidate.summary_sha256[:12]}.json"
        store.put_bytes(history, body, "application/json")
        try:
            # Only over the version decided against: a champion that changed since means a concurrent run won.
            store.put_bytes_if(config.key, body, etag, "application/json")
        except WriteConflict as err:
            store.delete([history])
            raise ChampionError(
                f"{store.uri(config.key)} changed while deciding (another run promoted concurrently); this candidate "
                "was not promoted: run the gate again to compare it with the new champion"
            ) from err
    log.info("promote: %s", reason)
    return Decision(
        promoted=promoted and not config.dry_run,
        reason=reason + (" (dry run: nothing written)" if promoted and config.dry_run else ""),
        candidate_dice=candidate.dice,
        candidate_dice_ci=candidate.dice_ci,
        champion_dice=champion.dice if champion else None,
        champion_dice_ci_high=champion.dice_ci[1] if champion else None,
        dataset_fingerprint=fingerprint,
        split=summary.split,
        champion_uri=store.uri(config.key),
        previous=champion,
        record=candidate,
    )
