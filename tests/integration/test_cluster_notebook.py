"""notebooks/submit_run.ipynb executed with nbclient in local mode (LOCAL=1) on a tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_notebook_runs_the_pipeline_locally_and_shows_metrics(
    store_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL", "1")
    monkeypatch.setenv("VESSELSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VESSELSEG_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv(
        "PIPELINE_PARAMS",
        json.dumps(
            {
                "seed": 5,
                "data_prep_overrides": {"data": {"synthetic": {"count": 8, "size": 128}}},
                "evaluate_overrides": {"evaluate": {"n_boot": 100}},
                "finetune_overrides": {"training": {"steps": 4, "val_every": 2, "checkpoint_every": 4}},
            }
        ),
    )
    notebook = nbformat.read(ROOT / "notebooks" / "submit_run.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "local run of" in text and "frangi" in text and "dice 95% CI" in text
    table = next(o for o in outputs if o.output_type == "execute_result")["data"]["text/plain"]
    assert "all_background" in table and "frangi" in table
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert (
        summary["n_images"] >= 1 and summary["metrics"]["frangi"]["dice"] > summary["metrics"]["all_background"]["dice"]
    )
