"""Reload the config and report which config version each process runs."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State

from gateway.api.common import ApiError, jsonable, runtime
from gateway.reload import list_processes


class AdminController(Controller):
    path = "/admin"
    tags = ("admin",)

    @post("/reload", status_code=200)
    async def reload(self, state: State) -> dict[str, Any]:
        """Compile the config files again; swap them in when they are valid."""
        gateway = runtime(state)
        if gateway.reloader is None:
            raise ApiError(503, "the gateway is still starting; try again")
        result: dict[str, Any] = await gateway.reloader.reload("API request")
        return result

    @get("/config")
    async def config_status(self, state: State) -> dict[str, Any]:
        """Return this process's config version, the last reload error and all processes."""
        gateway = runtime(state)
        config = gateway.config()
        status: dict[str, Any] = {
            "version": config.version,
            "config_dir": str(config.config_dir),
            "routes": len(config.routes),
            "pipelines": len(config.pipelines),
            "subscriptions": len(config.subscriptions),
        }
        if gateway.reloader is not None:
            status.update(gateway.reloader.state.as_dict())
            status["process_id"] = gateway.reloader.process_id
        status["processes"] = [
            jsonable(row) for row in await list_processes(gateway.db)
        ]
        return status
