"""The step kinds a pipeline can run: transform, emit, http and python."""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.config.model import (
    EmitStep,
    GatewayConfig,
    HttpStep,
    PythonStep,
    StepConfig,
)
from gateway.config.templates import TreeTemplate
from gateway.delivery.egress import check_url_syntax
from gateway.events import Work, emit_event
from gateway.store.database import Database

_RESPONSE_TEXT_LIMIT = 65536


# Events emitted by pipelines that were triggered by emitted events, this many
# levels deep, are taken for a loop between pipelines.
MAX_EMIT_DEPTH = 8

_EMIT_DEPTH_SQL = """
WITH RECURSIVE chain (event_id, depth) AS (
    SELECT %s::text, 0
    UNION ALL
    SELECT r.event_id, c.depth + 1
    FROM chain c
    JOIN mfo_events e ON e.id = c.event_id
    JOIN mfo_pipeline_runs r ON r.id = e.run_id
    WHERE c.depth < 64
)
SELECT max(depth) AS depth FROM chain
"""


async def _emit_depth(conn: Any, event_id: str) -> int:
    """Count the pipeline runs between an event and the request it came from."""
    cursor = await conn.execute(_EMIT_DEPTH_SQL, (event_id,))
    row = await cursor.fetchone()
    return int(row["depth"] or 0) if row else 0


class StepFailed(Exception):
    """Raise when a step cannot produce its output; the run fails with this message."""


@dataclass
class StepRuntime:
    """The services and state that steps use beyond their own config."""

    db: Database
    config: GatewayConfig
    http: httpx.AsyncClient
    allow_private: bool
    run_id: str
    work: list[Work]


async def run_step(
    step: StepConfig, context: dict[str, Any], runtime: StepRuntime
) -> Any:
    """Run one step against the context and return its output."""
    action = step.action
    if isinstance(action, TreeTemplate):
        return action.render(context)
    if isinstance(action, EmitStep):
        return await _emit(step, action, context, runtime)
    if isinstance(action, HttpStep):
        return await _call_http(action, context, runtime)
    assert isinstance(action, PythonStep)
    return await _call_python(action, context)


async def _emit(
    step: StepConfig, action: EmitStep, context: dict[str, Any], runtime: StepRuntime
) -> dict[str, Any]:
    event_type = action.type.render(context).strip()
    if not event_type:
        raise StepFailed("emit type rendered as an empty string")
    data = action.data.render(context) if action.data else context["event"]["data"]
    source_key = f"{runtime.run_id}:{step.name}"
    async with runtime.db.transaction() as conn:
        depth = await _emit_depth(conn, context["event"]["id"])
        if depth >= MAX_EMIT_DEPTH:
            raise StepFailed(
                f"not emitting {event_type!r}: the triggering event is {depth} pipeline"
                " runs away from a provider request, so a pipeline probably triggers"
                " itself; check the pipelines' `on:` patterns"
            )
        event_id, work = await emit_event(
            conn, runtime.config, event_type, data, runtime.run_id, source_key
        )
    runtime.work.extend(work)
    return {"event_id": event_id, "type": event_type}


async def _call_http(
    action: HttpStep, context: dict[str, Any], runtime: StepRuntime
) -> dict[str, Any]:
    url = action.url.render(context).strip()
    # The HTTP client's egress guard checks the address when it connects.
    check_url_syntax(url)
    headers = action.headers.render(context) if action.headers else {}
    request: dict[str, Any] = {"headers": {str(k): str(v) for k, v in headers.items()}}
    if action.json is not None:
        request["json"] = action.json.render(context)
    elif action.body is not None:
        request["content"] = action.body.render(context).encode()
    try:
        response = await runtime.http.request(
            action.method,
            url,
            timeout=action.timeout,
            follow_redirects=False,
            **request,
        )
    except httpx.HTTPError as exc:
        raise StepFailed(
            f"{action.method} {url} failed: {type(exc).__name__}: {exc}"
        ) from None
    text = response.text[:_RESPONSE_TEXT_LIMIT]
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    output = {
        "status": response.status_code,
        "headers": dict(response.headers),
        "json": body,
        "text": text,
    }
    if not response.is_success:
        raise StepFailed(f"{action.method} {url} returned HTTP {response.status_code}")
    return output


def _load_callable(target: str) -> Callable[..., Any]:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StepFailed(f"cannot import {module_name!r}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise StepFailed(f"{target!r} is not a callable")
    return function  # type: ignore[no-any-return]


async def _call_python(action: PythonStep, context: dict[str, Any]) -> Any:
    function = _load_callable(action.target)
    args = action.args.render(context) if action.args else None
    result = function(event=context["event"], steps=context["steps"], args=args)
    if inspect.isawaitable(result):
        result = await result
    return result
