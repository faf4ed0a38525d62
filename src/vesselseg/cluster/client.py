"""Upload, version, run and schedule the pipeline on a Kubeflow Pipelines API server through `kfp.Client`.

Auth, in this order: an explicit token (`KFP_TOKEN`, e.g. `kubectl create token … --audience=pipelines.kubeflow.org`),
a token file re-read on every request (`KF_PIPELINES_SA_TOKEN_PATH`, the projected service-account token
inside a Kubeflow notebook or pod), else whatever `kfp.Client` finds itself (standalone installs reached
through `kubectl port-forward` need none). Before `kfp.Client` is built, one quick GET of the health
endpoint turns "host unreachable" and "token refused" into one clear error each, instead of kfp's five
retried attempts and a stack trace.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vesselseg.config import ConfigModel
from vesselseg.errors import VesselsegError

log = logging.getLogger(__name__)

T = TypeVar("T")

HEALTHZ = "/apis/v2beta1/healthz"
FINISHED = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "ERROR"}
# robfig/cron with seconds, as KFP's scheduler reads it: sec min hour day-of-month month day-of-week.
CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")


class KfpError(VesselsegError):
    """A Kubeflow Pipelines request failed; the message names the host and the operation."""


class KfpUnreachableError(KfpError):
    """Nothing answered at the KFP host."""


class KfpAuthError(KfpError):
    """The KFP API refused the credentials (HTTP 401/403)."""


class KfpTarget(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="KFP API base URL, e.g. http://localhost:8080 after a port-forward")
    namespace: str | None = Field(None, description="the profile namespace on multi-user installs")
    token: str | None = Field(None, repr=False)
    token_path: Path | None = None
    verify_ssl: bool = True
    allow_plain_http_token: bool = Field(
        False, description="send the token over plain http:// to a host that is neither loopback nor in-cluster"
    )
    timeout_s: float = Field(10.0, gt=0, le=600, description="for the reachability probe")

    @field_validator("host")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"KFP host {value!r} needs a scheme: http://… or https://…")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _token_transport(self) -> KfpTarget:
        """A bearer token in clear text may be read on the way: only to this machine, or inside the cluster."""
        url = urllib.parse.urlsplit(self.host)
        if url.scheme != "http" or (self.token is None and self.token_path is None):
            return self
        host = url.hostname or ""
        if host == "localhost" or _is_loopback(host):
            return self
        if host.endswith((".svc", ".svc.cluster.local")):
            log.warning("sending the KFP token over plain http:// to %s (in-cluster service, not encrypted)", host)
            return self
        if not self.allow_plain_http_token:
            raise ValueError(
                f"refusing to send a bearer token over plain http:// to {self.host}: use https://, a "
                "`kubectl port-forward` to localhost, or set KFP_ALLOW_PLAIN_HTTP_TOKEN=true if the network "
                "in between is trusted"
            )
        log.warning("sending the KFP token over plain http:// to %s (allowed by KFP_ALLOW_PLAIN_HTTP_TOKEN)", host)
        return self

    @classmethod
    def from_env(cls, **given: Any) -> KfpTarget:
        """`KFP_HOST`, `KFP_NAMESPACE`, `KFP_TOKEN`, `KF_PIPELINES_SA_TOKEN_PATH`; explicit values win."""
        env = {
            "host": os.environ.get("KFP_HOST"),
            "namespace": os.environ.get("KFP_NAMESPACE"),
            "token": os.environ.get("KFP_TOKEN"),
            "token_path": os.environ.get("KF_PIPELINES_SA_TOKEN_PATH"),
            "allow_plain_http_token": os.environ.get("KFP_ALLOW_PLAIN_HTTP_TOKEN"),
        }
        values = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in given.items() if v is not None})
        if "host" not in values:
            raise KfpError("no KFP host: pass --host or set KFP_HOST (e.g. http://localhost:8080)")
        try:
            return cls.model_validate(values)
        except ValueError as err:
            raise KfpError(f"KFP target: {err}") from err

    def bearer(self) -> str | None:
        if self.token:
            return self.token
        if self.token_path is not None:
            try:
                return self.token_path.read_text().strip()
            except OSError as err:
                raise KfpAuthError(f"cannot read the KFP token file {self.token_path}: {err.strerror}") from err
        return None


class UploadResult(BaseModel):
    pipeline_id: str
    pipeline_name: str
    version_id: str
    version_name: str
    created_pipeline: bool


class Schedule(ConfigModel):
    """A recurring run: 6-field cron, one run at a time, no back-filling of missed slots."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cron: str
    max_concurrency: int = Field(1, ge=1)
    no_catchup: bool = True
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _six_fields(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 6 or not all(CRON_FIELD.match(f) for f in fields):
            raise ValueError(
                f"cron {value!r} must have 6 fields (second minute hour day-of-month month day-of-week), "
                "e.g. '0 0 3 * * 1' for Mondays 03:00"
            )
        return value


class RunOutcome(BaseModel):
    run_id: str
    state: str
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def version_name(code_version: str, now: dt.datetime | None = None) -> str:
    """`<git sha>-<UTC timestamp>`, from `storage.artifact.code_version()` (e.g. `0.1.0+g1a2b3c4d5e6f`)."""
    now = now or dt.datetime.now(dt.UTC)
    sha = code_version.split("+g", 1)[1] if "+g" in code_version else code_version
    return f"{re.sub(r'[^0-9A-Za-z.]+', '-', sha)}-{now:%Y%m%dT%H%M%SZ}"


def probe(target: KfpTarget) -> dict[str, Any]:
    """GET the health endpoint once; raise KfpUnreachableError / KfpAuthError / KfpError with the host in it."""
    url = target.host + HEALTHZ
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if (token := target.bearer()) is not None:
        request.add_header("Authorization", f"Bearer {token}")
    context = None
    if not target.verify_ssl:  # the user asked for it (self-signed ingress); kfp.Client gets the same switch
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # No proxies from the environment: kfp.Client does not use them either, so the probe sees what it will.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=target.timeout_s) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            hint = (
                "no token was sent: set KFP_TOKEN or KF_PIPELINES_SA_TOKEN_PATH"
                if token is None
                else "the token was refused"
            )
            raise KfpAuthError(f"KFP API at {target.host} answered HTTP {err.code} to {HEALTHZ}: {hint}") from err
        raise KfpError(f"KFP API at {target.host} answered HTTP {err.code} to {HEALTHZ}: {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise KfpUnreachableError(
            f"KFP API at {target.host} is unreachable ({reason}); check KFP_HOST and that "
            "`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80` (or your ingress) is up"
        ) from err


class KfpSession:
    """A connected `kfp.Client` plus the operations the project needs, each with a clear error."""

    def __init__(self, target: KfpTarget, poll_s: float = 5.0) -> None:
        import kfp
        from kfp.client import ServiceAccountTokenVolumeCredentials

        self.target = target
        self.poll_s = poll_s
        health = probe(target)
        kwargs: dict[str, Any] = {"host": target.host, "verify_ssl": target.verify_ssl}
        self.multi_user = bool(health.get("multi_user"))
        # A single-user server has no namespaces; passing one anyway would be rejected on some calls.
        self.namespace = target.namespace if self.multi_user else None
        if self.namespace:
            kwargs["namespace"] = self.namespace
        if target.token:
            kwargs["existing_token"] = target.token
        elif target.token_path is not None:
            kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(str(target.token_path))
        if self.multi_user and not target.namespace:
            raise KfpError(
                f"KFP at {target.host} is multi-user: pass --namespace (or KFP_NAMESPACE) = your profile namespace"
            )
        self.client = self._call("connect", lambda: kfp.Client(**kwargs))

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        import kfp_server_api
        import urllib3

        try:
            return fn()
        except kfp_server_api.ApiException as err:
            body = (err.body or "").strip()
            message = body
            try:
                message = json.loads(body).get("message", body)
            except (ValueError, AttributeError):
                pass
            cls = KfpAuthError if err.status in (401, 403) else KfpError
            raise cls(f"KFP API at {self.target.host}: {what} failed with HTTP {err.status}: {message}") from err
        except urllib3.exceptions.HTTPError as err:
            raise KfpUnreachableError(f"KFP API at {self.target.host}: {what} failed: {err}") from err

    # pipelines -------------------------------------------------------------------------------------
    def upload(self, package: Path, name: str, version: str, description: str = "") -> UploadResult:
        """A new pipeline named `name`, or a new version `version` of the existing one."""
        if not Path(package).is_file():
            raise KfpError(f"pipeline package {package} does not exist (run `make compile` first)")
        pipeline_id = self._call("look up pipeline", lambda: self.client.get_pipeline_id(name))
        if pipeline_id is None:
            created = self._call(
                "upload pipeline",
                lambda: self.client.upload_pipeline(
                    str(package), pipeline_name=name, description=description or None, namespace=self.namespace
                ),
            )
            latest = self.latest_version(created.pipeline_id)
            return UploadResult(
                pipeline_id=created.pipeline_id,
                pipeline_name=name,
                version_id=latest[0],
                version_name=latest[1],
                created_pipeline=True,
            )
        made = self._call(
            "upload pipeline version",
            lambda: self.client.upload_pipeline_version(
                str(package), version, pipeline_id=pipeline_id, description=description or None
            ),
        )
        return UploadResult(
            pipeline_id=pipeline_id,
            pipeline_name=name,
            version_id=made.pipeline_version_id,
            version_name=made.display_name,
            created_pipeline=False,
        )

    def pipeline_id(self, name: str) -> str:
        found = self._call("look up pipeline", lambda: self.client.get_pipeline_id(name))
        if found is None:
            raise KfpError(
                f"KFP at {self.target.host} has no pipeline named {name!r}: run `make pipeline-upload` first"
            )
        return found

    def latest_version(self, pipeline_id: str) -> tuple[str, str]:
        """(id, name) of the newest version of a pipeline."""
        listed = self._call(
            "list pipeline versions",
            lambda: self.client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc"),
        )
        if not listed.pipeline_versions:
            raise KfpError(f"KFP at {self.target.host}: pipeline {pipeline_id} has no versions")
        newest = listed.pipeline_versions[0]
        return newest.pipeline_version_id, newest.display_name

    # runs ------------------------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        found = self._call(
            "get or create experiment", lambda: self.client.create_experiment(name, namespace=self.namespace)
        )
        return found.experiment_id

    def submit(
        self,
        experiment: str,
        run_name: str,
        params: dict[str, Any],
        *,
        pipeline_name: str | None = None,
        version_id: str | None = None,
        package: Path | None = None,
        service_account: str | None = None,
    ) -> str:
        """Start one run of an uploaded pipeline version (newest unless given), or of a compiled package."""
        if (package is None) == (pipeline_name is None):
            raise KfpError("submit needs exactly one of a pipeline name (uploaded) or a compiled package")
        experiment_id = self.experiment_id(experiment)
        if package is not None:
            run = self._call(
                "create run",
                lambda: self.client.run_pipeline(
                    experiment_id,
                    run_name,
                    pipeline_package_path=str(package),
                    params=params,
                    service_account=service_account,
                ),
            )
        else:
            pipeline_id = self.pipeline_id(pipeline_name)  # type: ignore[arg-type]
            version_id = version_id or self.latest_version(pipeline_id)[0]
            run = self._call(
                "create run",
                lambda: self.client.run_pipeline(
                    experiment_id,
                    run_name,
                    pipeline_id=pipeline_id,
                    version_id=version_id,
                    params=params,
                    service_account=service_account,
                ),
            )
        log.info("run %s submitted to %s", run.run_id, self.target.host)
        return run.run_id

    def wait(self, run_id: str, timeout_s: float) -> RunOutcome:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self._call("get run", lambda: self.client.get_run(run_id))
            state = str(run.state or "PENDING").upper()
            if state in FINISHED:
                error = getattr(run.error, "message", None) if run.error else None
                return RunOutcome(run_id=run_id, state=state, error=error)
            if time.monotonic() > deadline:
                raise KfpError(f"KFP at {self.target.host}: run {run_id} still {state} after {timeout_s:.0f}s")
            time.sleep(self.poll_s)

    # schedules -------------------------------------------------------------------------------------
    def schedule(
        self,
        schedule: Schedule,
        experiment: str,
        pipeline_name: str,
        params: dict[str, Any],
        *,
        version_id: str | None = None,
        replace: bool = False,
        service_account: str | None = None,
    ) -> str:
        """Create the recurring run; one with the same name in the experiment is an error unless `replace`."""
        experiment_id = self.experiment_id(experiment)
        pipeline_id = self.pipeline_id(pipeline_name)
        version_id = version_id or self.latest_version(pipeline_id)[0]
        same_name = json.dumps(
            {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": schedule.name}]}
        )
        existing = (
            self._call(
                "list recurring runs",
                lambda: self.client.list_recurring_runs(experiment_id=experiment_id, filter=same_name),
            ).recurring_runs
            or []
        )
        if existing and not replace:
            raise KfpError(
                f"KFP at {self.target.host}: experiment {experiment!r} already has a recurring run named "
                f"{schedule.name!r} ({existing[0].recurring_run_id}); pass --replace to recreate it"
            )
        for old in existing:
            self._call("delete recurring run", partial(self.client.delete_recurring_run, old.recurring_run_id))
        made = self._call(
            "create recurring run",
            lambda: self.client.create_recurring_run(
                experiment_id,
                schedule.name,
                cron_expression=schedule.cron,
                max_concurrency=schedule.max_concurrency,
                no_catchup=schedule.no_catchup,
                params=params,
                pipeline_id=pipeline_id,
                version_id=version_id,
                enabled=schedule.enabled,
                service_account=service_account,
            ),
        )
        log.info("recurring run %s (%s) created on %s", made.recurring_run_id, schedule.cron, self.target.host)
        return made.recurring_run_id


def find_run_output(store: Any, pipeline_root: str, pipeline_name: str, run_id: str, task: str, output: str) -> str:
    """Object key of a task's output artifact under KFP's pipeline root.

    The launcher writes outputs under `<root>/<pipeline>/<run id>/<task>/[<salt>/]<output>` (the salt
    segment appeared in later KFP versions), so the search accepts both layouts.
    """
    root = pipeline_root.split("://", 1)[-1]
    bucket, _, prefix = root.partition("/")
    if bucket != store.bucket:
        raise KfpError(f"pipeline root {pipeline_root} is in bucket {bucket!r}, the store reads {store.bucket!r}")
    base = f"{prefix.strip('/')}/{pipeline_name}/{run_id}/".lstrip("/")
    for key in store.list(base):
        parts = key[len(base) :].split("/")
        if parts[0] == task and parts[-1] == output:
            return key
    raise KfpError(f"no output {output!r} of task {task!r} under {store.uri(base)}")
