"""promote: a new model replaces the champion only if it is clearly better (the rule: vesselseg.promote)."""

from __future__ import annotations

from pydantic import Field

from vesselseg.promote import ChampionError, Decision, PromoteConfig, promote
from vesselseg.stages.contract import Emitted, File, Input, Metrics, Output, Parameter, Stage
from vesselseg.stages.scratch import scratch_dir
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, read_manifest, resolve

NAME = "promote"
SUMMARY_FILE = "summary.json"


class Config(PromoteConfig):
    """The gate's settings and the three artifacts it judges."""

    evaluation: InputRef | str = Field(description="the evaluate artifact; its summary.json holds the candidate's Dice")
    dataset: InputRef | str = Field(description="the data-prep artifact the evaluation scored (its fingerprint)")
    model: InputRef | str = Field(description="the converted model that becomes the champion if promoted")


Result = Decision


def run(config: Config, store: ObjectStore | None = None) -> Result:
    store = store or ObjectStore()
    dataset = resolve(store, config.dataset)
    fingerprint = read_manifest(store, dataset).summary.get("fingerprint")
    if not fingerprint:
        raise ChampionError(f"dataset manifest at {dataset.uri} records no fingerprint")
    with scratch_dir(NAME) as scratch:
        fetch_dir(store, resolve(store, config.evaluation), scratch, only=[SUMMARY_FILE])
        summary = (scratch / SUMMARY_FILE).read_bytes()
    # The model is not read here, only named in the record: a ref is kept as given, a URI pinned to its manifest.
    model = config.model if isinstance(config.model, InputRef) else resolve(store, config.model)
    return promote(store, summary, fingerprint, model, config)


def emit(result: Result, store: ObjectStore) -> dict[str, Emitted]:
    values = {"promote.promoted": int(result.promoted), "promote.candidate_dice": result.candidate_dice}
    if result.champion_dice_ci_high is not None:
        values |= {
            "promote.champion_dice": result.champion_dice or 0.0,
            "promote.champion_dice_ci_high": result.champion_dice_ci_high,
        }
    metadata = {"promoted": result.promoted, "reason": result.reason, "champion_uri": result.champion_uri}
    return {"decision": File(result.model_dump_json(indent=2).encode(), metadata), "metrics": Metrics(values)}


STAGE = Stage(
    name=NAME,
    description="Promote `model` to champion only if its test Dice beats the champion's CI upper bound on the same "
    "split.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
    inputs=(
        Input("evaluation", "Artifact", "evaluation"),
        Input("dataset", "Dataset", "dataset"),
        Input("model", "Artifact", "model"),
    ),
    parameters=(Parameter("predictor", str, ("predictor",)),),
    outputs=(Output("decision", "Artifact"), Output("metrics", "Metrics")),
)
