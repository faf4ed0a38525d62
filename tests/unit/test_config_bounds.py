"""No config takes inf or NaN, and numeric fields whose bad values mean nonsense are bounded."""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import vesselseg
from vesselseg.baseline.frangi import FrangiConfig
from vesselseg.cluster.client import KfpTarget, Schedule
from vesselseg.cluster.platform import ClusterConfig
from vesselseg.config import ConfigModel
from vesselseg.data.synthetic import SyntheticConfig
from vesselseg.finetune.config import FinetuneConfig
from vesselseg.finetune.job import TrainJob
from vesselseg.infer.config import MemoryConfig
from vesselseg.promote import PromoteConfig
from vesselseg.stages import discover
from vesselseg.storage.object_store import FileEntry
from vesselseg.storage.settings import StoreSettings

ROOTS: list[type[BaseModel]] = [stage.config for stage in discover().values()] + [
    ClusterConfig,
    StoreSettings,
    KfpTarget,
    Schedule,
    PromoteConfig,
    TrainJob,
]


def _models_in(annotation: Any) -> typing.Iterator[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def config_classes() -> list[type[BaseModel]]:
    """Every model reachable from a stage's Config or another top-level config through its fields."""
    found: list[type[BaseModel]] = []
    todo = list(ROOTS)
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.append(cls)
        for field in cls.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return found


def _has_float(annotation: Any) -> bool:
    return annotation is float or any(_has_float(arg) for arg in typing.get_args(annotation))


def _with(annotation: Any, bad: float) -> Any:
    """A value of the field's shape with `bad` in it: the float itself, or inside the list or tuple."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _with(next(a for a in typing.get_args(annotation) if _has_float(a)), bad)
    if origin is list:
        return [1.0, bad]
    if origin is tuple:
        return tuple(bad if i == 0 else 0.5 for i in range(len(typing.get_args(annotation))))
    if origin is dict:
        return {"key": bad}
    return bad


FLOAT_FIELDS = [
    pytest.param(cls, name, field.annotation, id=f"{cls.__module__}.{cls.__qualname__}.{name}")
    for cls in config_classes()
    for name, field in cls.model_fields.items()
    if _has_float(field.annotation)
]


def test_the_walk_finds_the_configs() -> None:
    names = {cls.__qualname__ for cls in config_classes()}
    assert {"FinetuneConfig", "FrangiConfig", "InferConfig", "MemoryConfig", "SyntheticConfig", "StageSpec"} <= names
    assert len(FLOAT_FIELDS) >= 20


@pytest.mark.parametrize("cls,name,annotation", FLOAT_FIELDS)
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_every_float_field_of_every_config_refuses_inf_and_nan(
    cls: type[BaseModel], name: str, annotation: Any, bad: float
) -> None:
    with pytest.raises(ValidationError) as caught:
        cls.model_validate({name: _with(annotation, bad)})
    assert any(error["loc"][0] == name for error in caught.value.errors()), caught.value.errors()


def test_every_config_class_shares_the_base_config() -> None:
    """New configs inherit the inf/NaN refusal (and every class named *Config is part of a config tree)."""
    assert [c.__qualname__ for c in config_classes() if not issubclass(c, ConfigModel)] == []
    reachable = set(config_classes())
    named = set()
    for info in pkgutil.walk_packages(vesselseg.__path__, "vesselseg."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__name__.endswith("Config"):
                if obj.__module__.startswith("vesselseg."):
                    named.add(obj)
    assert sorted(c.__qualname__ for c in named - reachable) == []


@pytest.mark.parametrize(
    "cls,values,field",
    [
        (FinetuneConfig, {"lr": math.inf}, "lr"),
        (FinetuneConfig, {"lr": 5.0}, "lr"),
        (FinetuneConfig, {"betas": (math.nan, -5)}, "betas"),
        (FinetuneConfig, {"betas": (0.9, -5)}, "betas"),
        (FinetuneConfig, {"betas": (0.9, 1.0)}, "betas"),
        (FinetuneConfig, {"seed": -1}, "seed"),
        (FinetuneConfig, {"model_overrides": {"bce_loss_weight": math.nan}}, "model_overrides"),
        (FinetuneConfig, {"model_overrides": {"dice_loss_weight": -1.0}}, "model_overrides"),
        (FinetuneConfig, {"model_overrides": {"lora_dropout": math.inf}}, "model_overrides"),
        (FrangiConfig, {"sigmas": [-1, 0]}, "sigmas"),
        (FrangiConfig, {"sigmas": []}, "sigmas"),
        (FrangiConfig, {"beta": math.nan}, "beta"),
        (FrangiConfig, {"beta": 0}, "beta"),
        (FrangiConfig, {"gamma": -1.0}, "gamma"),
        (SyntheticConfig, {"size": 10**6}, "size"),
        (SyntheticConfig, {"count": 10**7}, "count"),
        (StoreSettings, {"backoff_s": math.inf}, "backoff_s"),
        (StoreSettings, {"backoff_s": 3600}, "backoff_s"),
        (MemoryConfig, {"max_memory_gib": math.inf}, "max_memory_gib"),
        (FileEntry, {"path": "a.png", "sha256": "0" * 64, "size": -1}, "size"),
    ],
)
def test_values_that_mean_nonsense_are_refused_with_the_field_named(
    cls: type[BaseModel], values: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        cls.model_validate(values)
    assert field in str(caught.value)


def test_defaults_and_ordinary_values_still_validate() -> None:
    FinetuneConfig(lr=4e-5, betas=(0.9, 0.999), model_overrides={"bce_loss_weight": 2.0, "mask_loss": "full_res"})
    FrangiConfig(sigmas=[1.0, 2.0], beta=0.5, gamma=15.0)
    SyntheticConfig(count=30, size=512)
    StoreSettings(backoff_s=0.5)
    MemoryConfig(max_memory_gib=40)
