"""Named recipes (recipes/*.yaml): each loads, its parameters are valid pipeline parameters and stage configs, and
`--recipe` reaches run-local with explicit `--set` options winning. submit/schedule:
tests/integration/test_cluster_client.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from vesselseg import cli
from vesselseg.config import ConfigError, apply_overrides
from vesselseg.local_run import load_pipeline
from vesselseg.recipes import RECIPES_DIR, known_recipes, load_recipe, with_recipe
from vesselseg.stages import stage_module

ROOT = Path(__file__).resolve().parents[2]
RECIPES = known_recipes()
# Numbers measured on some machine belong in a recipe or benchmarks/results/, not in what a field is.
MEASUREMENT_WORDS = ("H100", "samples/s", "s/step", "TFLOP", "images/s")


def stage_config(parameter: str) -> type[BaseModel]:
    """`finetune_overrides` → the finetune stage's Config."""
    return stage_module(parameter.removesuffix("_overrides").replace("_", "-")).Config


def stage_problems(parameter: str, overrides: dict[str, Any]) -> list[str]:
    """What the stage's Config refuses in `overrides`, except the inputs the DAG wires (absent from any override)."""
    try:
        stage_config(parameter).model_validate(overrides)
    except ValidationError as err:
        return [
            f"{parameter}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in err.errors()
            if not (e["type"] == "missing" and len(e["loc"]) == 1)
        ]
    return []


@pytest.fixture(scope="module")
def pipeline_parameters() -> set[str]:
    return set(load_pipeline(ROOT / "pipeline.py").component_spec.inputs or {})


def test_the_issue_names_have_recipes() -> None:
    assert {"demo-cpu", "sa2va-4b-h100x4", "sa2va-26b-h100x4", "drive-official-26b"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_is_valid_against_the_pipeline_and_the_stage_configs(
    name: str, pipeline_parameters: set[str]
) -> None:
    recipe = load_recipe(name)
    assert set(recipe.parameters) <= pipeline_parameters, set(recipe.parameters) - pipeline_parameters
    problems = [
        problem
        for parameter, value in recipe.parameters.items()
        if parameter.endswith("_overrides")
        for problem in stage_problems(parameter, value)
    ]
    assert not problems, f"recipes/{name}.yaml: {problems}"
    # Through `--set` and back, the parameters are the same values of the same types.
    assert apply_overrides({}, recipe.overrides()) == recipe.parameters
    training = recipe.parameters.get("finetune_overrides", {}).get("training", {})
    if recipe.gpus:
        assert training.get("gpus") == recipe.gpus, "a GPU recipe asks the finetune stage for the GPUs it states"


def test_the_stage_check_catches_a_misspelt_key_and_a_bad_value() -> None:
    assert stage_problems("finetune_overrides", {"training": {"steps": 5}}) == []
    assert stage_problems("finetune_overrides", {"training": {"micro_batch": 4}}) == [
        "finetune_overrides.training.micro_batch: Extra inputs are not permitted"
    ]
    assert stage_problems("infer_overrides", {"infer": {"strategy": "fastest"}})
    assert stage_problems("promote_overrides", {"nonsense": 1})


def test_unknown_names_list_the_known_recipes() -> None:
    for name in ("sa2va-4b-h100x8", "../recipes/demo-cpu", "/etc/passwd", "demo-cpu.yaml"):
        with pytest.raises(ConfigError, match=f"unknown recipe .*known recipes in .*: {', '.join(RECIPES)}"):
            load_recipe(name)


def test_explicit_set_options_win_over_the_recipe() -> None:
    overrides = with_recipe("sa2va-4b-h100x4", ["finetune_overrides.training.micro_batch_size=24", "seed=3"])
    params = apply_overrides({}, overrides)
    training = params["finetune_overrides"]["training"]
    assert training["micro_batch_size"] == 24 and params["seed"] == 3
    # The rest of the recipe stays.
    assert training["torch_compile"] == "encoders_and_llm" and training["lr"] == 4e-5
    assert with_recipe(None, ["seed=3"]) == ["seed=3"]


def test_run_local_takes_a_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("vesselseg.local_run.run_local", lambda **kw: seen.update(kw))
    assert cli.main(["run-local", "--recipe", "sa2va-26b-h100x4", "--set", "seed=7", "--no-cache"]) == 0
    params = apply_overrides({}, seen["overrides"])
    assert params == {**load_recipe("sa2va-26b-h100x4").parameters, "seed": 7}
    assert cli.main(["run-local", "--recipe", "nope"]) == 2


def test_a_broken_recipe_is_refused_naming_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    good = (RECIPES_DIR / "demo-cpu.yaml").read_text()
    (folder / "no-notes.yaml").write_text(good.replace("measured: true", "measured: false"))
    with pytest.raises(ConfigError, match=r"no-notes.yaml: <root>: Value error, a recipe that was not measured"):
        load_recipe("no-notes", folder)
    (folder / "typo.yaml").write_text(good.replace("gpus: 0", "gpu: 0"))
    with pytest.raises(ConfigError, match=r"typo.yaml: .*gpu: Extra inputs"):
        load_recipe("typo", folder)
    (folder / "gone.yaml").write_text(good.replace("README.md#", "MISSING.md#"))
    with pytest.raises(ConfigError, match=r"gone.yaml: reference 'MISSING.md#.*' is not a file"):
        load_recipe("gone", folder)
    (folder / "outside.yaml").write_text(good.replace("README.md#", "../README.md#"))
    with pytest.raises(ConfigError, match=r"outside.yaml: references.0.source: .*relative path inside the project"):
        load_recipe("outside", folder)


def _descriptions(model: type[BaseModel], seen: set[type]) -> list[tuple[str, str]]:
    found = []
    seen.add(model)
    for name, field in model.model_fields.items():
        found.append((f"{model.__name__}.{name}", field.description or ""))
        for inner in getattr(field.annotation, "__args__", ()) + (field.annotation,):
            if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in seen:
                found.extend(_descriptions(inner, seen))
    return found


def test_field_descriptions_hold_no_gpu_timings() -> None:
    """Field descriptions say what a field is; measured speeds live in recipes and benchmarks/results/."""
    seen: set[type] = set()
    configs = [stage_config(f"{name}_overrides") for name in ("finetune", "infer", "convert", "evaluate")]
    found = [(field, text) for config in configs for field, text in _descriptions(config, seen)]
    assert any(field == "FinetuneConfig.torch_compile" for field, _ in found)
    timed = [(field, text) for field, text in found if any(word in text for word in MEASUREMENT_WORDS)]
    assert not timed
