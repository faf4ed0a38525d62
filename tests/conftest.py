"""Shared fixtures: a real SeaweedFS server (started once per session, reused if already up)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from vesselseg.storage import ObjectStore, StoreSettings, server

# The whole DAG, short: a small synthetic set and a few training steps (tests add their own seed).
SHORT_DAG = [
    "data_prep_overrides.data.synthetic.count=8",
    "data_prep_overrides.data.synthetic.size=128",
    "evaluate_overrides.evaluate.n_boot=200",
    "finetune_overrides.training.steps=4",
    "finetune_overrides.training.val_every=2",
    "finetune_overrides.training.checkpoint_every=4",
]


@pytest.fixture(scope="session")
def store_settings() -> Iterator[StoreSettings]:
    settings = StoreSettings.from_env()
    was_up = server.status(settings).up
    server.up(settings)
    yield settings
    if not was_up:
        server.down()


@pytest.fixture()
def store(store_settings: StoreSettings) -> ObjectStore:
    return ObjectStore(store_settings)


@pytest.fixture()
def prefix() -> str:
    """A fresh key prefix per test so tests never see each other's objects."""
    return f"tests/{uuid.uuid4().hex[:12]}"
