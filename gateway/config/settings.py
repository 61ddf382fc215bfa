"""Where the gateway keeps its files when the command line does not say: the default store path.

``--db PATH`` wins; otherwise the ``GATEWAY_STORE`` environment variable; otherwise
``./var/gateway.db`` relative to the working directory (the service's state directory).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Mapping

STORE_ENV_VAR: Final[str] = "GATEWAY_STORE"
DEFAULT_STORE_PATH: Final[Path] = Path("var") / "gateway.db"


def store_path(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The SQLite store file to use: ``explicit``, else $GATEWAY_STORE, else ./var/gateway.db."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit)
    environ = os.environ if env is None else env
    from_env = environ.get(STORE_ENV_VAR, "").strip()
    if from_env:
        return Path(from_env)
    return DEFAULT_STORE_PATH
