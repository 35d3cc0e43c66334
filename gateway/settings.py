"""Read the process settings from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TRUE_VALUES = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Where state lives and how the API is protected.

    `database_url` None means an embedded PostgreSQL in `data_dir`;
    `queue_url` None means the saq queue shares the database.
    """

    config_dir: Path
    data_dir: Path
    database_url: str | None
    queue_url: str | None
    api_token: str | None
    allow_private_networks: bool
    watch_config: bool = True

    @classmethod
    def from_env(
        cls, config_dir: Path | str = "config", env: Mapping[str, str] | None = None
    ) -> Settings:
        env = os.environ if env is None else env
        config_path = Path(config_dir).resolve()
        data_dir = env.get("MFO_DATA_DIR") or str(config_path.parent / ".mfo")
        return cls(
            config_dir=config_path,
            data_dir=Path(data_dir).resolve(),
            database_url=env.get("MFO_DATABASE_URL") or None,
            queue_url=env.get("MFO_QUEUE_URL") or None,
            api_token=env.get("MFO_API_TOKEN") or None,
            allow_private_networks=env.get("MFO_ALLOW_PRIVATE_NETWORKS", "").lower()
            in TRUE_VALUES,
            watch_config=env.get("MFO_WATCH_CONFIG", "1").lower() in TRUE_VALUES,
        )
