"""What KFP component bodies call: build a stage config from component parameters, run the stage,
and write small pointer artifacts.

Multi-GB payloads stay in the object store; the KFP artifact passed between tasks holds only the
`InputRef` (URI + manifest sha256) of the published artifact, so KFP's launcher moves kilobytes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from vesselseg.storage import InputRef

log = logging.getLogger(__name__)


class KfpArtifact(Protocol):
    """The part of `dsl.Artifact` used here (kept structural so the library does not import kfp)."""

    path: str
    uri: str
    metadata: dict[str, Any]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_ref(artifact: KfpArtifact, ref: InputRef, **metadata: Any) -> None:
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(ref.model_dump_json(indent=2))
    artifact.metadata.update({"store_uri": ref.uri, "manifest_sha256": ref.manifest_sha256, **metadata})


def read_ref(artifact: KfpArtifact) -> InputRef:
    return InputRef.model_validate_json(Path(artifact.path).read_text())


def run_data_prep(source: str, seed: int, overrides: dict[str, Any], dataset: KfpArtifact) -> None:
    from vesselseg.stages import data_prep

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = data_prep.Config.model_validate(
        deep_merge({"data": {"source": source, "synthetic": {"seed": seed}, "split": {"seed": seed}}}, overrides)
    )
    result = data_prep.run(config)
    write_ref(
        dataset,
        result.dataset,
        fingerprint=result.summary.fingerprint,
        splits=json.dumps(result.summary.split_counts),
    )
