"""Shared fixtures: a real SeaweedFS server (started once per session, reused if already up)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from vesselseg.storage import ObjectStore, StoreSettings, server


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
