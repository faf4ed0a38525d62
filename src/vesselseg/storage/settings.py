"""Object-store settings: pydantic model filled from the environment.

Defaults match Kubeflow Pipelines' own object store (bucket `mlpipeline`, the `minio`/`minio123` keys its
manifests ship with) so that a local run and a cluster run read the same names.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ConfigDict, Field

from vesselseg.config import ConfigError, ConfigModel

ENV_PREFIX = "VESSELSEG_S3_"


class StoreSettings(ConfigModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field("127.0.0.1:9000", description="host:port of the S3 API, no scheme")
    access_key: str = "minio"
    secret_key: str = Field("minio123", repr=False)
    bucket: str = "mlpipeline"
    secure: bool = Field(False, description="use TLS")
    region: str | None = None
    part_size_mb: int = Field(16, ge=5, le=5120, description="multipart part size; S3 allows 5 MiB to 5 GiB")
    retries: int = Field(4, ge=0, le=20, description="attempts after the first for transient errors")
    backoff_s: float = Field(0.5, gt=0, le=60, description="first retry delay; doubles each attempt")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StoreSettings:
        """Read `VESSELSEG_S3_<FIELD>`; the keys may instead come from files named by `VESSELSEG_S3_<KEY>_FILE`
        (a Secret mounted as files, which child processes do not inherit as the environment), else from the
        standard `AWS_*` variables."""
        env = dict(os.environ if env is None else env)
        values: dict[str, str] = {}
        fallbacks = {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY"}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in env:
                values[name] = env[key]
            elif name in fallbacks and key + "_FILE" in env:
                values[name] = read_secret_file(key + "_FILE", env[key + "_FILE"])
            elif name in fallbacks and fallbacks[name] in env:
                values[name] = env[fallbacks[name]]
        return cls.model_validate(values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild these settings (for subprocesses)."""
        return {
            ENV_PREFIX + name.upper(): str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    @property
    def location(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.endpoint}/{self.bucket}"


def read_secret_file(variable: str, path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as err:
        raise ConfigError(f"{variable}={path}: cannot read the secret file ({err.strerror})") from err


# Where the artifact cache lives when not under the work dir (storage.cache): a volume a cluster's tasks share.
CACHE_DIR_ENV = "VESSELSEG_CACHE_DIR"


def work_dir() -> Path:
    """The project's scratch folder (store data, local runs); `VESSELSEG_HOME` moves it."""
    return Path(os.environ.get("VESSELSEG_HOME", ".work")).resolve()
