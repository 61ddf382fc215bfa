"""`gateway store init`: create the Cosmos DB database and events container the gateway writes to.

Also holds the command-line options every Cosmos command shares (endpoint, database, container, the
name of the environment variable holding the key, TLS verification); `gateway events query` uses them.
The key itself is never an option: only the name of the variable that holds it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import anyio

from gateway.store.cosmos_client import (
    DEFAULT_KEY_ENV,
    INDEXING_POLICY,
    PARTITION_KEY_PATH,
    CosmosConfig,
    CosmosConfigError,
    CosmosStoreStats,
    build_client,
    ensure_container,
)
from gateway.store.errors import StoreError

ENDPOINT_ENV = "GATEWAY_COSMOS_ENDPOINT"


def add_cosmos_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint", default=os.environ.get(ENDPOINT_ENV),
        help=f"Cosmos DB account endpoint, https://... (default: ${ENDPOINT_ENV})")
    parser.add_argument("--database", default="meter-gateway", help="database (default meter-gateway)")
    parser.add_argument("--container", default="events", help="events container (default events)")
    parser.add_argument(
        "--key-env", default=DEFAULT_KEY_ENV, metavar="VAR",
        help=f"environment variable holding the account key (default {DEFAULT_KEY_ENV})")
    parser.add_argument(
        "--insecure-skip-tls-verify", action="store_true",
        help="do not verify the server's TLS certificate (only for a local test server)")


def cosmos_config_from_args(args: argparse.Namespace) -> CosmosConfig:
    if not args.endpoint:
        raise CosmosConfigError(f"no Cosmos DB endpoint: pass --endpoint or set {ENDPOINT_ENV}")
    return CosmosConfig(
        endpoint=args.endpoint,
        database=args.database,
        container=args.container,
        key_env=args.key_env,
        verify_tls=not args.insecure_skip_tls_verify,
    )


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    store = subparsers.add_parser("store", help="set up the event store (Cosmos DB)")
    actions = store.add_subparsers(dest="store_action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="create the Cosmos DB database and events container",
        description="Create (if missing) the database and the events container, partitioned by "
        f"{PARTITION_KEY_PATH}, with an indexing policy that leaves event payloads unindexed. "
        "Safe to run again.",
    )
    add_cosmos_arguments(init)
    init.add_argument("--json", action="store_true", help="print one JSON object")
    init.set_defaults(func=run_init)


async def init_store(config: CosmosConfig) -> dict[str, Any]:
    """Create database and container if missing; report what is there afterwards."""
    stats = CosmosStoreStats()
    client = build_client(config, stats)
    try:
        container = await ensure_container(client, config)
        properties = await container.read()
    finally:
        await client.close()
    paths = list(properties.get("partitionKey", {}).get("paths", []))
    if paths != [PARTITION_KEY_PATH]:
        raise CosmosConfigError(
            f"container {config.container!r} exists with partition key {paths}, "
            f"not [{PARTITION_KEY_PATH!r}]; use another container name")
    return {
        "endpoint": config.endpoint,
        "database": config.database,
        "container": config.container,
        "partitionKey": paths,
        "indexedPaths": [p["path"] for p in INDEXING_POLICY["includedPaths"]],
    }


def run_init(args: argparse.Namespace) -> int:
    from gateway.store.cosmos import translate_errors

    try:
        config = cosmos_config_from_args(args)

        async def main() -> dict[str, Any]:
            with translate_errors(None):
                return await init_store(config)

        report = anyio.run(main)
    except StoreError as exc:
        print(f"gateway store init: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(f"Cosmos DB store ready: database {report['database']!r}, container "
              f"{report['container']!r} (partition key {PARTITION_KEY_PATH}) at {report['endpoint']}")
        print("indexed paths: " + ", ".join(report["indexedPaths"]))
    return 0
