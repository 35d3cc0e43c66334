"""Read the process settings from the environment."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.config.checks import parse_duration
from gateway.exceptions import GatewayError

TRUE_VALUES = ("1", "true", "yes", "on")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    """Where state lives and how the API is protected.

    `database_url` None means an embedded PostgreSQL in `data_dir`;
    `queue_url` None means the saq queue shares the database.
    `egress_allowlist` lists the private networks that outgoing requests
    may reach anyway. The sweep runs every `sweep_interval` seconds and
    treats the job of a due row as lost after `sweep_grace` seconds.
    """

    config_dir: Path
    data_dir: Path
    database_url: str | None
    queue_url: str | None
    api_token: str | None
    allow_private_networks: bool
    watch_config: bool = True
    queue_name: str = "mfo"
    egress_allowlist: tuple[Network, ...] = ()
    sweep_interval: float = 15.0
    sweep_grace: float = 30.0

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
            queue_name=env.get("MFO_QUEUE_NAME") or "mfo",
            egress_allowlist=_networks(env.get("MFO_EGRESS_ALLOWLIST", "")),
            sweep_interval=_seconds(env, "MFO_SWEEP_INTERVAL", 15.0),
            sweep_grace=_seconds(env, "MFO_SWEEP_GRACE", 30.0),
        )


def _networks(value: str) -> tuple[Network, ...]:
    """Parse a comma-separated list of CIDR networks such as `10.1.0.0/16,fd00::/8`."""
    networks = []
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise GatewayError(
                f"MFO_EGRESS_ALLOWLIST: invalid network {item.strip()!r}: {exc};"
                " write CIDR networks separated by commas, such as 10.1.0.0/16"
            ) from None
    return tuple(networks)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name)
    if not value:
        return default
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise GatewayError(f"{name}: {exc}") from None
    if seconds <= 0:
        raise GatewayError(f"{name} must be longer than 0s, not {value!r}")
    return seconds
