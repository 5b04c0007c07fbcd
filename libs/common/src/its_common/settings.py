"""Validated settings from the environment, with secrets also read from files.

Every ITS setting is an environment variable: ``ITS_*`` for our own, the standard names for the
rest (``POLYGON_API_KEY``, ``REDIS_URL``, ``DATABASE_URL``, ``OTEL_*``). Settings every process
shares are ``ITS_<FIELD>`` (``ITS_SYMBOLS``, ``ITS_LOG_LEVEL``...); a service's own fields are
read under its ``env_prefix`` (``ITS_TRADER_<FIELD>``). A secret can instead be given as a file
path in ``<NAME>_FILE`` (how Kubernetes mounts Secrets).

Settings are validated once at start; :class:`SettingsError` names each bad variable and says what
is expected, without ever echoing a secret's value. A variable under one of the service's own
prefixes that matches no setting (a typo such as ``ITS_TRADER_MIN_CONFIDENSE``) is an error too,
with the closest valid name suggested. Other services' variables and the shared names are
accepted: the local stack and the Helm chart give one environment to many processes.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from its_common import redaction
from its_common.streams import StreamLayout

SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")
ENV_PREFIX = "ITS_"


class SettingsError(ValueError):
    """Configuration that cannot run; the message lists every problem, one per line."""


def shared_env(name: str) -> AliasChoices:
    """``ITS_<NAME>``: a setting under the common prefix whatever the class's ``env_prefix``."""
    return AliasChoices(f"{ENV_PREFIX}{name.upper()}")


def env_names(name: str, field: FieldInfo, prefix: str = ENV_PREFIX) -> list[str]:
    """The environment variable names a field is read from, in priority order."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"{prefix}{name}".upper()]


class FileSecretsSource(PydanticBaseSettingsSource):
    """Reads ``<ENV_NAME>_FILE`` for every field: the file's content (trailing newline dropped)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for env_name in env_names(field_name, field, self._prefix()):
            path = os.environ.get(f"{env_name}_FILE")
            if path:
                return _read_secret_file(f"{env_name}_FILE", path), field_name, False
        return None, field_name, False

    def _prefix(self) -> str:
        return env_prefix_of(self.settings_cls)

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


def _read_secret_file(variable: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SettingsError(
            f"{variable}: cannot read the file it names ({exc.strerror or exc}); "
            "expected a readable file holding the value"
        ) from None


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def env_prefix_of(cls: type[BaseSettings]) -> str:
    return str(cls.model_config.get("env_prefix", ENV_PREFIX)).upper()


class BaseServiceSettings(BaseSettings):
    """Settings every ITS process shares; services subclass it and add their own fields.

    A service sets ``model_config = SettingsConfigDict(env_prefix="ITS_<SERVICE>_")``: its fields
    without an explicit ``validation_alias`` are then read from ``ITS_<SERVICE>_<FIELD>``, and an
    unknown variable under that prefix stops the start. The shared fields below carry explicit
    ``ITS_*`` or standard names, so they keep their names in every subclass.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # Unknown *environment* variables are checked by load_settings (only under the service's
        # own prefixes: one environment feeds many processes); unknown init keywords are a bug.
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
        populate_by_name=True,
    )
    SERVICE: ClassVar[str] = "its"
    # Prefixes owned by this service beyond its env_prefix (e.g. the trader's ITS_IB_): unknown
    # variables under them are errors too.
    EXTRA_ENV_PREFIXES: ClassVar[tuple[str, ...]] = ()

    service_name: str = Field(
        default="",
        validation_alias=shared_env("service_name"),
        description="Service name in logs, metrics, traces",
    )
    environment: str = Field(
        default="local",
        validation_alias=shared_env("environment"),
        description="Deployment environment label",
    )
    log_level: str = Field(
        default="INFO",
        validation_alias=shared_env("log_level"),
        pattern=r"^(?i)(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
    )
    http_host: str = Field(
        default="127.0.0.1",
        validation_alias=shared_env("http_host"),
        description="Bind address of the health endpoint",
    )
    http_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        validation_alias=shared_env("http_port"),
        description="/healthz /readyz /metrics",
    )
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, validation_alias=shared_env("heartbeat_interval_s")
    )
    symbols: Annotated[list[str], NoDecode] = Field(
        default=["NVDA", "MSFT"], min_length=1, validation_alias=shared_env("symbols")
    )

    stream_shards: int = Field(
        default=1,
        ge=1,
        le=256,
        validation_alias=shared_env("stream_shards"),
        description="symbol groups the market-data streams are split into (its_common.streams)",
    )

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "ITS_REDIS_URL"),
        pattern=r"^(redis|rediss|unix)://",
    )
    redis_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_PASSWORD", "ITS_REDIS_PASSWORD")
    )
    redis_cluster: bool = Field(
        default=False,
        validation_alias=AliasChoices("REDIS_CLUSTER", "ITS_REDIS_CLUSTER"),
        description="REDIS_URL is a node of a Redis Cluster (its_common.rediscluster)",
    )
    database_url: str = Field(
        default="postgresql://its@127.0.0.1:5432/its",
        validation_alias=AliasChoices("DATABASE_URL", "ITS_DATABASE_URL"),
        pattern=r"^postgres(ql)?://",
    )
    database_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_PASSWORD", "ITS_DATABASE_PASSWORD"),
    )
    polygon_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("POLYGON_API_KEY", "ITS_POLYGON_API_KEY")
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
        pattern=r"^https?://",
    )
    # Leader election of the singletons (its_common.leader): off, auto (a Kubernetes Lease in a
    # pod, a Redis lease elsewhere), redis or kubernetes.
    leader_election: Literal["off", "auto", "redis", "kubernetes"] = Field(
        default="off", validation_alias=shared_env("leader_election")
    )
    leader_lease_name: str = Field(
        default="",
        validation_alias=shared_env("leader_lease_name"),
        description="Lease name (default: the service name)",
    )
    leader_lease_s: float = Field(default=10.0, gt=0, validation_alias=shared_env("leader_lease_s"))
    leader_renew_s: float = Field(default=3.0, gt=0, validation_alias=shared_env("leader_renew_s"))
    leader_renew_deadline_s: float = Field(
        default=7.0, gt=0, validation_alias=shared_env("leader_renew_deadline_s")
    )
    leader_retry_s: float = Field(default=1.0, gt=0, validation_alias=shared_env("leader_retry_s"))
    kubeconfig: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KUBECONFIG", "ITS_KUBECONFIG"),
        description="kubeconfig outside a cluster (in a pod the ServiceAccount is used)",
    )
    kube_namespace: str | None = Field(
        default=None,
        validation_alias=shared_env("kube_namespace"),
        description="Kubernetes namespace (default: the pod's or the kubeconfig context's)",
    )

    @field_validator("symbols", mode="before")
    @classmethod
    def _parse_symbols(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: list[str]) -> list[str]:
        upper = [symbol.upper() for symbol in value]
        bad = [symbol for symbol in upper if not SYMBOL_PATTERN.match(symbol)]
        if bad:
            raise ValueError(f"ticker symbols like NVDA,MSFT; not {', '.join(bad)}")
        if len(set(upper)) != len(upper):
            raise ValueError("each symbol once")
        return upper

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.upper()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource)
        return (init_settings, env_settings, FileSecretsSource(settings_cls))

    @classmethod
    def owned_env_prefixes(cls) -> tuple[str, ...]:
        """Prefixes whose every variable must name one of this class's settings.

        The common ``ITS_`` prefix is never owned: it holds other services' variables too.
        """
        own = [env_prefix_of(cls), *(prefix.upper() for prefix in cls.EXTRA_ENV_PREFIXES)]
        return tuple(prefix for prefix in own if prefix != ENV_PREFIX)

    @classmethod
    def known_env_names(cls) -> set[str]:
        """Every variable this class reads: each field's names (upper case) and their ``_FILE``."""
        prefix = env_prefix_of(cls)
        names = {
            env.upper()
            for name, field in cls.model_fields.items()
            for env in env_names(name, field, prefix)
        }
        return names | {f"{name}_FILE" for name in names}

    def secret_values(self) -> list[str]:
        """Every secret's plain value, for log redaction."""
        values = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        return values

    def effective_service_name(self) -> str:
        return self.service_name or self.SERVICE

    def stream_layout(self) -> StreamLayout:
        return StreamLayout(self.stream_shards)

    def redis_url_with_password(self) -> str:
        """REDIS_URL with REDIS_PASSWORD applied (never log the result)."""
        if self.redis_password is None:
            return self.redis_url
        scheme, rest = self.redis_url.split("://", 1)
        if "@" in rest.split("/", 1)[0]:
            return self.redis_url
        password = self.redis_password.get_secret_value()
        from urllib.parse import quote

        return f"{scheme}://:{quote(password, safe='')}@{rest}"


SettingsT = TypeVar("SettingsT", bound=BaseServiceSettings)


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build and validate settings; on failure raise :class:`SettingsError` naming each variable
    (bad values and unknown names under the service's own prefixes, all in one message)."""
    problems = describe_unknown_variables(cls, os.environ)
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        problems += describe_validation_errors(cls, exc)
    if problems:
        header = f"invalid configuration for {getattr(cls, 'SERVICE', cls.__name__)}:"
        raise SettingsError("\n".join([header, *problems]))
    redaction.register(*settings.secret_values())
    return settings


def describe_unknown_variables(cls: type[BaseServiceSettings], environ: Iterable[str]) -> list[str]:
    """One line per variable under the service's own prefixes that names no setting.

    Only names are reported (never values: the variable may hold a secret), each with the closest
    valid name when there is one.
    """
    prefixes = cls.owned_env_prefixes()
    if not prefixes:
        return []
    known = cls.known_env_names()
    lines = []
    for variable in sorted(environ):
        name = variable.upper()
        if not name.startswith(prefixes) or name in known:
            continue
        candidates = sorted(n for n in known if n.endswith("_FILE") == name.endswith("_FILE"))
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        owner = getattr(cls, "SERVICE", cls.__name__)
        lines.append(f"  {variable}: not a setting of {owner}{hint}")
    return lines


def describe_validation_errors(cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    lines = []
    prefix = env_prefix_of(cls)
    for error in exc.errors(include_url=False):
        field_name = _field_of(cls, str(error["loc"][0]) if error["loc"] else "")
        field = cls.model_fields.get(field_name)
        names = env_names(field_name, field, prefix) if field is not None else [field_name]
        secret = field is not None and "SecretStr" in repr(field.annotation)
        problem = error["msg"].removeprefix("Value error, ")
        where = " or ".join(names)
        if not secret and "input" in error and error["type"] != "missing":
            where += f"={error['input']!r}"
        hint = f" [{field.description}]" if field is not None and field.description else ""
        lines.append(f"  {where}: {problem}{hint}")
    return lines


def _field_of(cls: type[BaseSettings], loc: str) -> str:
    """The field an error location names: the field itself or one of its aliases."""
    if loc in cls.model_fields:
        return loc
    for name, field in cls.model_fields.items():
        if loc.upper() in (env.upper() for env in env_names(name, field)):
            return name
    return loc
