"""Run parameters are checked against each stage's config before anything runs: run-local, compile, submit, schedule.

A typo in a stage's overrides must fail at once, naming the key, the stage and the valid keys, not when the task
starts (after fine-tuning). submit and schedule talk to a KFP API server, which cannot run here: they go to
`FakeKfpApiServer` (tests/integration/test_cluster_client.py), and the test shows no request reached it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_cluster_client import FakeKfpApiServer
from vesselseg import cli, local_run
from vesselseg.cluster.commands import add_cluster_commands
from vesselseg.config import ConfigError
from vesselseg.opt_ins import OptInError
from vesselseg.run_parameters import check_overrides
from vesselseg.stages import load_contracts

TYPO = "visualize_overrides.report.dpii=300"


@pytest.fixture(autouse=True)
def _contracts_derived() -> None:
    """The contracts as data are derived once per change of the source (seconds); what is timed is the check."""
    load_contracts()


def _refuses_the_typo(message: str) -> None:
    assert "visualize_overrides.report.dpii" in message and "'visualize'" in message
    assert "dpi" in message.split("valid keys", 1)[1], "the valid keys are listed"


def test_nested_keys_follow_the_configs_extra_forbid() -> None:
    check_overrides("finetune_overrides", {"training": {"steps": 4, "model_overrides": {"anything": 1}}})
    check_overrides("promote_overrides", {"key": "models/x.json", "dry_run": True})
    with pytest.raises(ConfigError, match=r"data_prep_overrides\.data\.synthetic\.sizee: stage 'data-prep'.*count"):
        check_overrides("data_prep_overrides", {"data": {"synthetic": {"sizee": 64}}})
    with pytest.raises(ConfigError, match=r"evaluate_overrides\.prefix: .* takes a value here, not a section"):
        check_overrides("evaluate_overrides", {"prefix": {"a": 1}})
    with pytest.raises(ConfigError, match=r"visualise_overrides: no stage takes these.*visualize_overrides"):
        check_overrides("visualise_overrides", {})
    with pytest.raises(OptInError, match="wires 'dataset'"):
        check_overrides("baseline_overrides", {"dataset": "s3://elsewhere/"})


def test_run_local_fails_in_under_a_second_before_touching_the_store(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("the object store was started before the parameters were checked")

    monkeypatch.setattr(local_run.server, "up", tripwire)
    started = time.perf_counter()
    assert cli.main(["run-local", "--set", "seed=1", "--set", TYPO]) == 2
    assert time.perf_counter() - started < 1.0
    _refuses_the_typo(capsys.readouterr().err)


def test_compile_refuses_a_typo_in_the_defaults_it_would_compile_before_importing_kfp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "kfp", None)  # importing kfp (or pipeline.py) now fails otherwise
    started = time.perf_counter()
    assert cli.main(["compile", "--set", TYPO, "--out", str(tmp_path / "pipeline.yaml")]) == 2
    assert time.perf_counter() - started < 1.0
    _refuses_the_typo(capsys.readouterr().err)
    assert not (tmp_path / "pipeline.yaml").exists()


@pytest.mark.parametrize("command", [["submit"], ["schedule", "--cron", "0 0 3 * * 1"]])
def test_submit_and_schedule_fail_before_any_request(
    command: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    parser = argparse.ArgumentParser()
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    with FakeKfpApiServer(token="s3cret") as fake:
        monkeypatch.setenv("KFP_HOST", fake.url)
        monkeypatch.setenv("KFP_TOKEN", "s3cret")
        args = parser.parse_args([*command, "--set", "seed=2", "--set", TYPO])
        started = time.perf_counter()
        with pytest.raises(ConfigError) as err:
            args.func(args)
        assert time.perf_counter() - started < 1.0
        assert fake.requests == [], "the server was asked before the parameters were checked"
    _refuses_the_typo(str(err.value))
