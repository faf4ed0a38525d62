"""Where the test split's ground truth is published, and with whose keys it is read.

The test labels are their own artifact, in their own bucket (default ``vesselseg-test-labels``, on the same
S3 endpoint as every other artifact), so that access to them is one bucket policy. On a cluster that bucket is
readable only with the keys of a second identity, whose Secret only the tasks that write or score the labels
mount (data-prep, evaluate, visualize: see manifests/README.md); the keys every other task holds cannot read
it. Locally one set of keys opens both buckets: there the separation is the DAG's, as it is on the cluster.
"""

from __future__ import annotations

import os

from pydantic import ConfigDict, Field, model_validator

from vesselseg.config import ConfigModel
from vesselseg.storage import ObjectStore
from vesselseg.storage.settings import read_secret_file

ENV_PREFIX = "VESSELSEG_TEST_LABELS_"


class LabelStoreSettings(ConfigModel):
    """`VESSELSEG_TEST_LABELS_BUCKET|ACCESS_KEY|SECRET_KEY` (a key may come from the file that
    `VESSELSEG_TEST_LABELS_<KEY>_FILE` names: a mounted Secret); keys left out are the object store's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field("vesselseg-test-labels", min_length=3)
    access_key: str | None = None
    secret_key: str | None = Field(None, repr=False)

    @model_validator(mode="after")
    def _both_keys_or_neither(self) -> LabelStoreSettings:
        # One key alone would silently fall back to the pipeline identity, which cannot read the labels.
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError(f"set both {ENV_PREFIX}ACCESS_KEY and {ENV_PREFIX}SECRET_KEY, or neither")
        return self

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LabelStoreSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, str] = {}
        for name in cls.model_fields:
            variable = ENV_PREFIX + name.upper()
            if variable in env:
                values[name] = env[variable]
            elif name != "bucket" and variable + "_FILE" in env:
                values[name] = read_secret_file(variable + "_FILE", env[variable + "_FILE"])
        return cls.model_validate(values)


def label_store(store: ObjectStore, settings: LabelStoreSettings | None = None) -> ObjectStore:
    """A client for the test-label bucket on `store`'s endpoint, with the test-label identity where one is set."""
    settings = settings or LabelStoreSettings.from_env()
    update: dict[str, object] = {"bucket": settings.bucket}
    if settings.access_key is not None and settings.secret_key is not None:
        update |= {"access_key": settings.access_key, "secret_key": settings.secret_key}
    return ObjectStore(store.settings.model_copy(update=update))
