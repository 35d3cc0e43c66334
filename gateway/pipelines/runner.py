"""Run a pipeline's steps in order and store each step's result."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from gateway.config.templates import RenderError
from gateway.exceptions import EgressRejected
from gateway.pipelines.steps import StepFailed, StepRuntime, run_step
from gateway.store import queries

logger = logging.getLogger(__name__)


def _event_context(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["id"],
        "type": event["type"],
        "timestamp": event["created_at"].astimezone(UTC).isoformat(),
        "data": event["data"],
    }


async def run_pipeline(runtime: StepRuntime) -> str:
    """Run the pipeline run `runtime.run_id`; return its final status."""
    db, run_id = runtime.db, runtime.run_id
    async with db.connection() as conn:
        run = await queries.start_run(conn, run_id)
        if run is None:
            return "finished"
        event = await queries.get_event(conn, run["event_id"])
    pipeline = next(
        (p for p in runtime.config.pipelines if p.name == run["pipeline"]), None
    )
    if pipeline is None or event is None:
        error = f"pipeline {run['pipeline']!r} is no longer configured"
        async with db.connection() as conn:
            await queries.finish_run(conn, run_id, "failed", [], error)
        return "failed"

    context: dict[str, Any] = {"event": _event_context(event), "steps": {}}
    results: list[dict[str, Any]] = []
    status, error = "succeeded", None
    for step in pipeline.steps:
        result: dict[str, Any] = {"name": step.name, "kind": step.kind}
        started = time.perf_counter()
        result["started_at"] = datetime.now(UTC).isoformat()
        try:
            if step.when is not None and not step.when.test(context):
                result["status"] = "skipped"
                results.append(result)
                continue
            output = await run_step(step, context, runtime)
        except (StepFailed, RenderError, EgressRejected) as exc:
            status, error = "failed", f"step {step.name!r}: {exc}"
            result.update(status="failed", error=str(exc))
        except Exception as exc:  # a python step may raise anything
            logger.exception(
                "pipeline %s run %s step %s crashed", pipeline.name, run_id, step.name
            )
            status, error = "failed", f"step {step.name!r}: {type(exc).__name__}: {exc}"
            result.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        else:
            context["steps"][step.name] = output
            result.update(status="succeeded", output=output)
        result["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        results.append(result)
        if status == "failed":
            break

    async with db.connection() as conn:
        await queries.finish_run(conn, run_id, status, _jsonable(results), error)
    log = logger.info if status == "succeeded" else logger.error
    log("pipeline %s run %s %s event=%s", pipeline.name, run_id, status, event["id"])
    return status


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
