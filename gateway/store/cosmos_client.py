"""Connection to Azure Cosmos DB (NoSQL API) for the event store: configuration, client, HTTP counting.

The key is never part of the configuration: it is read from the environment variable the config
names, when the client is built, and never logged or put in an error. TLS verification is on unless
a caller (the test suite, against a local server with a self-signed certificate) turns it off
explicitly. Every HTTP request the SDK sends passes through :class:`CountingTransport`, so benchmarks
report requests and request units counted on the wire, not estimated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from azure.core.pipeline.transport import AioHttpTransport
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient

from gateway.store.base import StoreStats
from gateway.store.errors import StoreError

DEFAULT_KEY_ENV = "GATEWAY_COSMOS_KEY"
PARTITION_KEY_PATH = "/streamId"

# What the event store queries filter or sort on. Event payloads (`data`, most of `metadata`) are
# not indexed: every write then costs fewer request units, and nothing queries inside them.
INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [
        {"path": "/streamId/?"},
        {"path": "/kind/?"},
        {"path": "/firstVersion/?"},
        {"path": "/lastVersion/?"},
        {"path": "/firstRecordedAt/?"},
        {"path": "/lastRecordedAt/?"},
        {"path": "/events/[]/id/?"},
        {"path": "/events/[]/type/?"},
        {"path": "/events/[]/metadata/recordedAt/?"},
    ],
    "excludedPaths": [{"path": "/*"}, {"path": '/"_etag"/?'}],
}


class CosmosConfigError(StoreError):
    """The Cosmos DB configuration is incomplete or wrong (names the key, never a secret)."""


@dataclass(frozen=True, slots=True)
class CosmosConfig:
    endpoint: str
    database: str = "meter-gateway"
    container: str = "events"
    key_env: str = DEFAULT_KEY_ENV  # name of the environment variable holding the account key
    verify_tls: bool = True
    # Let the SDK route to the regional endpoints the account advertises (normal on Azure). Off when
    # the endpoint is reached through a proxy or a private endpoint the account does not know.
    endpoint_discovery: bool = True
    max_commit_bytes: int = 256 * 1024  # well below Cosmos's 2 MB item limit
    # When true, an append first checks with one cross-partition query that none of its event ids is
    # stored in any stream (the contract's EventIdConflict). It costs one request per append; turn it
    # off only where event ids are unique per stream by construction.
    check_event_ids_across_streams: bool = False
    # Appends of one append_batch in flight at once (one request each); bounds the connections the
    # gateway opens and the request-unit burst it sends.
    max_concurrent_appends: int = 16
    connection_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    connect_retries: int = 1
    throttle_retries: int = 5  # 429: the SDK waits the server's retry-after between attempts
    throttle_max_wait_s: int = 10

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("https://", "http://")):
            raise CosmosConfigError(f"cosmos endpoint must be an http(s) URL, got {self.endpoint!r}")
        for name in ("database", "container", "key_env"):
            if not getattr(self, name):
                raise CosmosConfigError(f"cosmos {name} must not be empty")
        if self.max_commit_bytes <= 0:
            raise CosmosConfigError("cosmos max_commit_bytes must be positive")
        if self.max_concurrent_appends < 1:
            raise CosmosConfigError("cosmos max_concurrent_appends must be at least 1")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "CosmosConfig":
        """Build from a config-file table; an inline key is refused with how to reference it."""
        if "key" in raw:
            raise CosmosConfigError(
                "cosmos key must not be written in the config; set key_env to the name of an "
                "environment variable holding it"
            )
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CosmosConfigError(f"unknown cosmos config keys: {', '.join(unknown)}")
        if "endpoint" not in raw:
            raise CosmosConfigError("cosmos endpoint is missing")
        return cls(**dict(raw))

    def key(self) -> str:
        value = os.environ.get(self.key_env)
        if not value:
            raise CosmosConfigError(
                f"environment variable {self.key_env} (the Cosmos DB account key) is not set"
            )
        return value


@dataclass(slots=True)
class CosmosStoreStats(StoreStats):
    """StoreStats plus what the Cosmos backend counts on the wire."""

    http_requests: int = 0
    request_charge: float = 0.0  # sum of x-ms-request-charge over the responses that carry it
    charged_responses: int = 0
    items_written: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class CountingTransport(AioHttpTransport):
    """aiohttp transport that counts every request sent and the request charge of every response.

    With ``verify_tls`` it also insists on certificate verification: the SDK silently turns it off
    for ``localhost``/``127.0.0.1`` endpoints (an emulator convenience), which our configuration
    does not allow implicitly.
    """

    def __init__(self, stats: CosmosStoreStats, *, verify_tls: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stats = stats
        self.verify_tls = verify_tls

    async def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.verify_tls:
            kwargs["connection_verify"] = True
        stats = self.stats
        stats.http_requests += 1
        is_query = str(request.headers.get("x-ms-documentdb-isquery", "")).lower() == "true"
        if request.method in ("GET", "HEAD") or is_query:
            stats.reads += 1
            kind = "query" if is_query else "read"
        else:
            stats.writes += 1
            kind = request.method.lower()
        stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
        response = await super().send(request, **kwargs)
        charge = response.headers.get("x-ms-request-charge")
        if charge:
            try:
                stats.request_charge += float(charge)
                stats.charged_responses += 1
            except ValueError:
                pass
        return response


def build_client(config: CosmosConfig, stats: CosmosStoreStats) -> CosmosClient:
    return CosmosClient(
        config.endpoint,
        credential=config.key(),
        transport=CountingTransport(stats, verify_tls=config.verify_tls),
        connection_verify=config.verify_tls,
        connection_timeout=config.connection_timeout_s,
        read_timeout=config.read_timeout_s,
        retry_connect=config.connect_retries,
        retry_read=config.connect_retries,
        retry_status=0,
        retry_backoff_factor=0.2,
        retry_throttle_total=config.throttle_retries,
        retry_throttle_backoff_max=config.throttle_max_wait_s,
        enable_endpoint_discovery=config.endpoint_discovery,
    )


async def ensure_container(client: CosmosClient, config: CosmosConfig) -> ContainerProxy:
    """Create the database and the events container if missing (what `gateway store init` does)."""
    database = await client.create_database_if_not_exists(config.database)
    return await database.create_container_if_not_exists(
        config.container,
        partition_key=PartitionKey(path=PARTITION_KEY_PATH),
        indexing_policy=INDEXING_POLICY,
    )
