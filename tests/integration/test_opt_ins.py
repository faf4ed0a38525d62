"""Remote-code and pickle opt-ins come from the operator, never from a run's parameters."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration.test_cluster_platform import ROOT, cluster, executors_by_stage
from vesselseg import kfp_glue
from vesselseg.cli import main
from vesselseg.cluster.commands import _params
from vesselseg.cluster.platform import compile_for_cluster
from vesselseg.opt_ins import OptInError, operator_opt_ins
from vesselseg.stages import stage_contract
from vesselseg.storage import InputRef

NOWHERE = InputRef(uri="s3://mlpipeline/tests/no-such-artifact/", manifest_sha256="0" * 64)


def artifact(tmp_path: Path, name: str, ref: InputRef | None = None) -> SimpleNamespace:
    path = tmp_path / name
    if ref is not None:
        path.write_text(ref.model_dump_json())
    return SimpleNamespace(path=str(path), uri=f"local://{name}", metadata={})


@pytest.fixture(autouse=True)
def no_operator_opt_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VESSELSEG_TRUST_REMOTE_CODE", raising=False)
    monkeypatch.delenv("VESSELSEG_TRUST_PICKLE", raising=False)


@pytest.mark.parametrize(
    "overrides",
    [
        {"infer": {"backend": "remote_code", "trust_remote_code": True}},
        {"infer": {"backend": "remote_code", "trust_remote_code": True}, "model": "s3://mlpipeline/someone/else/"},
    ],
)
def test_infer_overrides_cannot_turn_on_remote_code(tmp_path: Path, overrides: dict) -> None:
    """The infer task refuses before it reads the store (the refs point nowhere: reaching the store would fail
    differently)."""
    with pytest.raises(OptInError, match=r"infer_overrides\.infer\.trust_remote_code: .*operator opt-in"):
        kfp_glue.run_stage("infer", {
            "model": artifact(tmp_path, "model", NOWHERE), "dataset": artifact(tmp_path, "dataset", NOWHERE),
            "overrides": overrides, "predictions": artifact(tmp_path, "predictions"),
        })  # fmt: skip


def test_convert_overrides_cannot_turn_on_pickle(tmp_path: Path) -> None:
    with pytest.raises(OptInError, match=r"convert_overrides\.trust_pickle: .*VESSELSEG_TRUST_PICKLE"):
        kfp_glue.run_stage("convert", {
            "training": artifact(tmp_path, "training", NOWHERE), "dataset": artifact(tmp_path, "dataset", NOWHERE),
            "overrides": {"trust_pickle": True}, "model": artifact(tmp_path, "model"),
            "parity": artifact(tmp_path, "parity"),
        })  # fmt: skip


def test_a_run_parameter_cannot_replace_a_wired_model(tmp_path: Path) -> None:
    with pytest.raises(OptInError, match=r"infer_overrides\.model: the pipeline wires 'model'"):
        kfp_glue.run_stage("infer", {
            "model": artifact(tmp_path, "model", NOWHERE), "dataset": artifact(tmp_path, "dataset", NOWHERE),
            "overrides": {"model": "s3://mlpipeline/someone/else/"}, "predictions": artifact(tmp_path, "predictions"),
        })  # fmt: skip


def test_the_operator_environment_sets_the_opt_in_and_nothing_else_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    infer, convert = stage_contract("infer"), stage_contract("convert")
    wired = {"model": artifact(tmp_path, "model", NOWHERE), "dataset": artifact(tmp_path, "dataset", NOWHERE)}
    data = kfp_glue.stage_data(infer, wired | {"overrides": {"infer": {"backend": "remote_code"}}})
    assert data["infer"] == {"backend": "remote_code", "trust_remote_code": False}
    monkeypatch.setenv("VESSELSEG_TRUST_REMOTE_CODE", "true")
    data = kfp_glue.stage_data(infer, wired | {"overrides": {"infer": {"backend": "remote_code"}}})
    assert data["infer"]["trust_remote_code"] is True
    training = {"training": artifact(tmp_path, "training", NOWHERE), "dataset": wired["dataset"]}
    assert kfp_glue.stage_data(convert, training | {"overrides": {}})["trust_pickle"] is False
    monkeypatch.setenv("VESSELSEG_TRUST_PICKLE", "maybe")
    with pytest.raises(ValueError, match="VESSELSEG_TRUST_PICKLE='maybe'"):
        operator_opt_ins()


def test_run_local_refuses_the_parameter_and_offers_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run-local", "--pipeline", str(ROOT / "pipeline.py"), "--set", "convert_overrides.trust_pickle=true"])
    assert code == 2
    assert "--trust-pickle" in capsys.readouterr().err


def test_submit_and_schedule_refuse_the_parameter_before_contacting_the_server() -> None:
    with pytest.raises(OptInError, match="infer_overrides.infer.trust_remote_code"):
        _params(["infer_overrides.infer.trust_remote_code=true"])
    assert _params(["infer_overrides.infer.batch_size=2"]) == {"infer_overrides": {"infer": {"batch_size": 2}}}


def test_the_cluster_config_compiles_the_operator_opt_ins_into_the_tasks(tmp_path: Path) -> None:
    config = cluster()
    config.opt_ins.trust_remote_code = True
    tasks = executors_by_stage(compile_for_cluster(ROOT / "pipeline.py", tmp_path / "p.yaml", config))
    env = {
        stage: {e["name"]: e["value"] for e in container.get("env", [])} for stage, (_, container, _) in tasks.items()
    }
    assert env["infer"]["VESSELSEG_TRUST_REMOTE_CODE"] == "true"
    assert env["convert"]["VESSELSEG_TRUST_PICKLE"] == "false"
    assert not any(k.startswith("VESSELSEG_TRUST") for stage in ("evaluate", "baseline") for k in env[stage])
    assert json.loads(config.model_dump_json())["opt_ins"] == {"trust_remote_code": True, "trust_pickle": False}
