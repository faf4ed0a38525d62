"""Upload, version, run and schedule through the real `kfp.Client` against `FakeKfpApiServer`."""

from __future__ import annotations

import argparse
import datetime as dt
import email.parser
import email.policy
import io
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from vesselseg.cluster.client import (
    KfpAuthError,
    KfpError,
    KfpSession,
    KfpTarget,
    KfpUnreachableError,
    Schedule,
    find_run_output,
    version_name,
)
from vesselseg.cluster.commands import add_cluster_commands
from vesselseg.local_run import compile_pipeline
from vesselseg.storage import ObjectStore

API = "/apis/v2beta1"
ROOT = Path(__file__).resolve().parents[2]


class FakeKfpApiServer:
    """A FAKE Kubeflow Pipelines API server, for tests only: no real KFP API server can run here.

    It speaks the v2beta1 REST endpoints that `kfp.Client` calls for pipelines (upload, upload_version,
    list, get, versions), experiments, runs and recurring runs, with the same JSON field names, status
    codes and bearer-token check, keeps everything in memory, and records each request so tests can
    assert on what the client sent. A run reports RUNNING on its first `get` and then `final_state`.
    It listens on 127.0.0.1 on a random port and is not a KFP implementation: no workflow ever executes.
    """

    def __init__(self, token: str | None = None, multi_user: bool = False, final_state: str = "SUCCEEDED") -> None:
        self.token = token
        self.multi_user = multi_user
        self.final_state = final_state
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.packages: dict[str, dict[str, Any]] = {}
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._gets: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeKfpApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ----- behaviour -----
    @staticmethod
    def _now() -> str:
        return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

    @staticmethod
    def _display_name_filter(query: dict[str, list[str]]) -> str | None:
        raw = query.get("filter", [""])[0]
        if not raw:
            return None
        for predicate in json.loads(raw).get("predicates", []):
            if predicate.get("key") == "display_name" and predicate.get("operation") in (1, "EQUALS"):
                return predicate.get("stringValue") or predicate.get("string_value")
        raise ValueError(f"unsupported filter {raw}")

    def _store_package(self, body: bytes, content_type: str) -> dict[str, Any]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                docs = list(yaml.safe_load_all(part.get_payload(decode=True)))
                if not docs or "pipelineInfo" not in docs[0] or "deploymentSpec" not in docs[0]:
                    raise ValueError("uploadfile is not a compiled KFP pipeline")
                return {"pipeline_spec": docs[0], "platform_spec": docs[1] if len(docs) > 1 else None}
        raise ValueError("multipart body has no 'uploadfile' part")

    def _add_version(
        self, pipeline_id: str, name: str, package: dict[str, Any], description: str | None
    ) -> dict[str, Any]:
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": uuid.uuid4().hex,
            "display_name": name,
            "name": name,
            "description": description,
            "created_at": self._now(),
        }
        self.versions[pipeline_id].append(version)
        self.packages[version["pipeline_version_id"]] = package
        return version

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> tuple[int, Any]:
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "Unauthenticated", "code": 16, "message": "Failed to authenticate request"}
        q = {k: v[0] for k, v in query.items()}
        parts = path[len(API) :].strip("/").split("/")
        with self._lock:
            if method == "GET" and parts == ["healthz"]:
                return 200, {"multi_user": self.multi_user, "pipeline_store": "database"}
            if parts[0] == "pipelines":
                return self._pipelines(method, parts, q, query, headers, body)
            if parts[0] == "experiments":
                return self._experiments(method, parts, q, query, body)
            if parts[0] == "runs":
                return self._runs(method, parts, body)
            if parts[0] == "recurringruns":
                return self._recurring(method, parts, query, body)
        return 404, {"code": 5, "message": f"no route {method} {path}"}

    def _pipelines(self, method, parts, q, query, headers, body):
        if method == "POST" and parts[1:] == ["upload"]:
            name = q.get("name") or q.get("display_name")
            if any(p["display_name"] == name for p in self.pipelines.values()):
                return 409, {"code": 6, "message": f"pipeline named {name} already exists"}
            package = self._store_package(body, headers["content-type"])
            pipeline = {
                "pipeline_id": uuid.uuid4().hex,
                "display_name": name,
                "name": name,
                "description": q.get("description"),
                "created_at": self._now(),
                "namespace": q.get("namespace"),
            }
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self.versions[pipeline["pipeline_id"]] = []
            self._add_version(pipeline["pipeline_id"], name, package, q.get("description"))
            return 200, pipeline
        if method == "POST" and parts[1:] == ["upload_version"]:
            pipeline_id = q.get("pipelineid")
            if pipeline_id not in self.pipelines:
                return 404, {"code": 5, "message": f"pipeline {pipeline_id} not found"}
            if any(v["display_name"] == q.get("name") for v in self.versions[pipeline_id]):
                return 409, {"code": 6, "message": f"version {q.get('name')} already exists"}
            return 200, self._add_version(
                pipeline_id, q["name"], self._store_package(body, headers["content-type"]), q.get("description")
            )
        if method == "GET" and len(parts) == 1:
            name = self._display_name_filter(query)
            found = [p for p in self.pipelines.values() if name is None or p["display_name"] == name]
            return 200, ({"pipelines": found, "total_size": len(found)} if found else {})
        pipeline_id = parts[1]
        if pipeline_id not in self.pipelines:
            return 404, {"code": 5, "message": f"pipeline {pipeline_id} not found"}
        if method == "GET" and len(parts) == 2:
            return 200, self.pipelines[pipeline_id]
        if method == "GET" and parts[2:] == ["versions"]:
            versions = list(self.versions[pipeline_id])
            if q.get("sort_by", "").endswith(" desc"):
                versions.reverse()
            size = int(q.get("page_size") or len(versions) or 1)
            return 200, {"pipeline_versions": versions[:size], "total_size": len(versions)}
        return 404, {"code": 5, "message": "no such pipeline route"}

    def _experiments(self, method, parts, q, query, body):
        if method == "POST" and len(parts) == 1:
            data = json.loads(body)
            experiment = {
                "experiment_id": uuid.uuid4().hex,
                "display_name": data["display_name"],
                "description": data.get("description"),
                "namespace": data.get("namespace"),
                "created_at": self._now(),
                "storage_state": "AVAILABLE",
            }
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if method == "GET" and len(parts) == 1:
            name = self._display_name_filter(query)
            found = [e for e in self.experiments.values() if name is None or e["display_name"] == name]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if method == "GET" and parts[1] in self.experiments:
            return 200, self.experiments[parts[1]]
        return 404, {"code": 5, "message": "experiment not found"}

    def _check_source(self, data: dict[str, Any]) -> str | None:
        if data.get("experiment_id") not in self.experiments:
            return f"experiment {data.get('experiment_id')} not found"
        ref = data.get("pipeline_version_reference")
        if ref:
            if ref.get("pipeline_version_id") not in self.packages:
                return f"pipeline version {ref.get('pipeline_version_id')} not found"
        elif not data.get("pipeline_spec"):
            return "neither a pipeline version reference nor a pipeline spec"
        return None

    def _runs(self, method, parts, body):
        if method == "POST" and len(parts) == 1:
            data = json.loads(body)
            if problem := self._check_source(data):
                return 400, {"code": 3, "message": problem}
            run = {
                **data,
                "run_id": uuid.uuid4().hex,
                "state": "PENDING",
                "created_at": self._now(),
                "storage_state": "AVAILABLE",
            }
            self.runs[run["run_id"]] = run
            return 200, run
        if method == "GET" and len(parts) == 2 and parts[1] in self.runs:
            run = self.runs[parts[1]]
            seen = self._gets[run["run_id"]] = self._gets.get(run["run_id"], 0) + 1
            run["state"] = "RUNNING" if seen == 1 else self.final_state
            if run["state"] == "FAILED":
                run["error"] = {"code": 2, "message": "task evaluate failed"}
            return 200, run
        return 404, {"code": 5, "message": "run not found"}

    def _recurring(self, method, parts, query, body):
        if method == "POST" and len(parts) == 1:
            data = json.loads(body)
            if problem := self._check_source(data):
                return 400, {"code": 3, "message": problem}
            cron = ((data.get("trigger") or {}).get("cron_schedule") or {}).get("cron", "")
            if len(cron.split()) != 6:
                return 400, {"code": 3, "message": f"invalid cron {cron!r}: KFP wants 6 fields"}
            recurring = {**data, "recurring_run_id": uuid.uuid4().hex, "created_at": self._now(), "status": "ENABLED"}
            self.recurring[recurring["recurring_run_id"]] = recurring
            return 200, recurring
        if method == "GET" and len(parts) == 1:
            name = self._display_name_filter(query)
            experiment = query.get("experiment_id", [None])[0]
            found = [
                r
                for r in self.recurring.values()
                if (name is None or r["display_name"] == name) and experiment in (None, r["experiment_id"])
            ]
            return 200, ({"recurringRuns": found, "total_size": len(found)} if found else {})
        if method == "DELETE" and len(parts) == 2 and parts[1] in self.recurring:
            del self.recurring[parts[1]]
            return 200, {}
        return 404, {"code": 5, "message": "recurring run not found"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                fake.requests.append((self.command, url.path))
                try:
                    status, payload = fake.handle(self.command, url.path, parse_qs(url.query), self.headers, body)
                except (ValueError, KeyError) as err:
                    status, payload = 400, {"code": 3, "message": str(err)}
                blob = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's real pipeline, compiled."""
    return compile_pipeline(ROOT / "pipeline.py", tmp_path_factory.mktemp("kfp") / "pipeline.yaml")


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKfpApiServer]:
    # kfp.Client reads ~/.config/kfp/context.json; keep the developer's own out of the test.
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KFP_HOST", "KFP_NAMESPACE", "KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    with FakeKfpApiServer(token="s3cret") as server:
        yield server


def session(fake: FakeKfpApiServer, **kw: Any) -> KfpSession:
    return KfpSession(KfpTarget(host=fake.url, token="s3cret", **kw), poll_s=0.01)


def test_upload_creates_the_pipeline_then_adds_versions(fake: FakeKfpApiServer, package: Path) -> None:
    s = session(fake)
    first = s.upload(package, "vesselseg", "ignored-for-a-new-pipeline")
    assert first.created_pipeline and first.version_name == "vesselseg"
    second = s.upload(package, "vesselseg", "abc123-20260101T000000Z")
    assert not second.created_pipeline
    assert second.pipeline_id == first.pipeline_id and second.version_name == "abc123-20260101T000000Z"
    assert [v["display_name"] for v in fake.versions[first.pipeline_id]] == ["vesselseg", "abc123-20260101T000000Z"]
    assert s.latest_version(first.pipeline_id) == (second.version_id, second.version_name)
    uploaded = fake.packages[second.version_id]["pipeline_spec"]
    assert (
        uploaded["pipelineInfo"]["name"] == "vesselseg" and "exec-evaluate" in uploaded["deploymentSpec"]["executors"]
    )
    with pytest.raises(KfpError, match="HTTP 409.*already exists"):
        s.upload(package, "vesselseg", "abc123-20260101T000000Z")


def test_submit_runs_the_newest_version_with_parameters_and_waits(fake: FakeKfpApiServer, package: Path) -> None:
    s = session(fake)
    uploaded = s.upload(package, "vesselseg", "v1")
    run_id = s.submit("nightly", "run-1", {"seed": 3, "dataset_source": "synthetic"}, pipeline_name="vesselseg")
    run = fake.runs[run_id]
    assert run["pipeline_version_reference"] == {
        "pipeline_id": uploaded.pipeline_id,
        "pipeline_version_id": uploaded.version_id,
    }
    assert run["runtime_config"]["parameters"] == {"seed": 3, "dataset_source": "synthetic"}
    assert fake.experiments[run["experiment_id"]]["display_name"] == "nightly"
    assert s.wait(run_id, timeout_s=5).succeeded
    # A second run reuses the experiment instead of creating another.
    s.submit("nightly", "run-2", {}, pipeline_name="vesselseg")
    assert len(fake.experiments) == 1


def test_submit_a_package_directly_and_report_a_failed_run(fake: FakeKfpApiServer, package: Path) -> None:
    fake.final_state = "FAILED"
    s = session(fake)
    run_id = s.submit("adhoc", "run", {"seed": 1}, package=package)
    assert fake.runs[run_id]["pipeline_spec"]["pipelineInfo"]["name"] == "vesselseg"
    outcome = s.wait(run_id, timeout_s=5)
    assert outcome.state == "FAILED" and not outcome.succeeded and "evaluate" in (outcome.error or "")


def test_schedule_is_a_six_field_cron_one_at_a_time_without_catchup(fake: FakeKfpApiServer, package: Path) -> None:
    s = session(fake)
    uploaded = s.upload(package, "vesselseg", "v1")
    weekly = Schedule(name="weekly", cron="0 0 3 * * 1")
    rid = s.schedule(weekly, "retrain", "vesselseg", {"seed": 0})
    made = fake.recurring[rid]
    assert made["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(made["max_concurrency"]) == 1
    assert made["no_catchup"] is True and made["mode"] == "ENABLE"
    assert made["pipeline_version_reference"]["pipeline_version_id"] == uploaded.version_id
    with pytest.raises(KfpError, match="already has a recurring run named 'weekly'"):
        s.schedule(weekly, "retrain", "vesselseg", {})
    replaced = s.schedule(weekly, "retrain", "vesselseg", {}, replace=True)
    assert list(fake.recurring) == [replaced]
    with pytest.raises(ValueError, match="6 fields"):
        Schedule(name="bad", cron="0 3 * * 1")


def test_cli_upload_submit_schedule(fake: FakeKfpApiServer, package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFP_HOST", fake.url)
    monkeypatch.setenv("KFP_TOKEN", "s3cret")
    parser = argparse.ArgumentParser()
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> dict[str, Any]:
        args = parser.parse_args([*argv])
        out = io.StringIO()
        with redirect_stdout(out):
            assert args.func(args) == 0
        return json.loads(out.getvalue()[out.getvalue().index("{") :])

    run("upload", "--package", str(package))
    second = run("upload", "--package", str(package), "--version", "v2")
    assert second["version_name"] == "v2" and not second["created_pipeline"]
    submitted = run("submit", "--set", "seed=4", "--set", "dataset_source=/data/DRIVE", "--wait", "--poll-s", "0.01")
    assert submitted["state"] == "SUCCEEDED"
    assert fake.runs[submitted["run_id"]]["runtime_config"]["parameters"] == {
        "seed": 4,
        "dataset_source": "/data/DRIVE",
    }
    scheduled = run("schedule", "--cron", "0 0 3 * * 1")
    assert fake.recurring[scheduled["recurring_run_id"]]["display_name"] == "vesselseg-retrain"


def test_cli_submit_and_schedule_take_a_recipe_and_set_wins(
    fake: FakeKfpApiServer, package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vesselseg.config import ConfigError, apply_overrides
    from vesselseg.recipes import load_recipe

    monkeypatch.setenv("KFP_HOST", fake.url)
    monkeypatch.setenv("KFP_TOKEN", "s3cret")
    parser = argparse.ArgumentParser()
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    session(fake).upload(package, "vesselseg", "v1")
    recipe = load_recipe("drive-official-26b").parameters
    expected = apply_overrides(yaml.safe_load(yaml.safe_dump(recipe)), ["finetune_overrides.training.steps=20"])
    assert expected != recipe

    submit = parser.parse_args(
        ["submit", "--recipe", "drive-official-26b", "--set", "finetune_overrides.training.steps=20"]
    )
    with redirect_stdout(io.StringIO()):
        assert submit.func(submit) == 0
    (run,) = fake.runs.values()
    assert run["runtime_config"]["parameters"] == expected

    schedule = parser.parse_args(["schedule", "--cron", "0 0 3 * * 1", "--recipe", "sa2va-4b-h100x4"])
    with redirect_stdout(io.StringIO()):
        assert schedule.func(schedule) == 0
    (recurring,) = fake.recurring.values()
    assert recurring["runtime_config"]["parameters"] == load_recipe("sa2va-4b-h100x4").parameters

    unknown = parser.parse_args(["submit", "--recipe", "sa2va-4b-h100x8"])
    with pytest.raises(ConfigError, match="unknown recipe 'sa2va-4b-h100x8'; known recipes .*sa2va-4b-h100x4"):
        unknown.func(unknown)
    assert len(fake.runs) == 1


def test_clear_errors_for_refused_token_missing_token_and_unreachable_host(
    fake: FakeKfpApiServer, tmp_path: Path
) -> None:
    with pytest.raises(KfpAuthError, match=rf"{fake.url}.*HTTP 401.*token was refused"):
        KfpSession(KfpTarget(host=fake.url, token="wrong"))
    with pytest.raises(KfpAuthError, match="no token was sent"):
        KfpSession(KfpTarget(host=fake.url))
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    assert KfpSession(KfpTarget(host=fake.url, token_path=token_file)).client is not None
    with pytest.raises(KfpAuthError, match="cannot read the KFP token file"):
        KfpSession(KfpTarget(host=fake.url, token_path=tmp_path / "missing"))
    # A port that was just free: nothing listens there.
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    with pytest.raises(KfpUnreachableError, match=rf"127.0.0.1:{port} is unreachable"):
        KfpSession(KfpTarget(host=f"http://127.0.0.1:{port}", timeout_s=2))
    with pytest.raises(ValueError, match="needs a scheme"):
        KfpTarget(host="localhost:8080")


def test_multi_user_needs_a_namespace_and_uses_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, package: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with FakeKfpApiServer(multi_user=True) as fake:
        with pytest.raises(KfpError, match="multi-user: pass --namespace"):
            KfpSession(KfpTarget(host=fake.url))
        s = KfpSession(KfpTarget(host=fake.url, namespace="team-a"))
        s.upload(package, "vesselseg", "v1")
        s.submit("exp", "run", {}, pipeline_name="vesselseg")
        assert next(iter(fake.pipelines.values()))["namespace"] == "team-a"
        assert next(iter(fake.experiments.values()))["namespace"] == "team-a"


def test_version_names_carry_the_git_sha_and_utc_time() -> None:
    at = dt.datetime(2026, 3, 1, 4, 5, 6, tzinfo=dt.UTC)
    assert version_name("0.1.0+g1a2b3c4d5e6f", at) == "1a2b3c4d5e6f-20260301T040506Z"
    assert version_name("0.1.0+g1a2b3c4d5e6f.dirty", at) == "1a2b3c4d5e6f.dirty-20260301T040506Z"
    assert version_name("0.1.0", at) == "0.1.0-20260301T040506Z"


@pytest.mark.parametrize("layout", ["{task}/{out}", "{task}/a1b2c3/{out}"])
def test_run_outputs_are_found_under_the_pipeline_root(store: ObjectStore, prefix: str, layout: str) -> None:
    """Both launcher layouts: <root>/<pipeline>/<run>/<task>/<output> and …/<task>/<salt>/<output>."""
    root = f"minio://mlpipeline/{prefix}/v2/artifacts"
    key = f"{prefix}/v2/artifacts/vesselseg/run-1/" + layout.format(task="evaluate", out="summary")
    store.put_bytes(key, b"{}")
    store.put_bytes(f"{prefix}/v2/artifacts/vesselseg/run-1/evaluate/evaluation", b"{}")
    store.put_bytes(f"{prefix}/v2/artifacts/vesselseg/run-2/evaluate/summary", b"{}")
    assert find_run_output(store, root, "vesselseg", "run-1", "evaluate", "summary") == key
    with pytest.raises(KfpError, match="no output 'html' of task 'evaluate'"):
        find_run_output(store, root, "vesselseg", "run-1", "evaluate", "html")
    with pytest.raises(KfpError, match="bucket 'other'"):
        find_run_output(store, "minio://other/v2", "vesselseg", "run-1", "evaluate", "summary")
