"""The `mfo` command: validate the config, serve, run workers, manage deliveries."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import cli.events
import cli.subscriptions
from cli.client import ApiClient, CliError
from cli.common import retry_in_batches, segment
from cli.logs import configure_logging
from gateway.exceptions import ConfigError, GatewayError

app = typer.Typer(
    name="mfo",
    help="A declarative webhook gateway: YAML-defined providers in, signed webhooks out.",
    no_args_is_help=True,
    add_completion=False,
)
deliveries = typer.Typer(
    help="List, inspect and retry outgoing deliveries.", no_args_is_help=True
)
app.add_typer(deliveries, name="deliveries")
app.add_typer(cli.events.app, name="events")
app.add_typer(cli.subscriptions.app, name="subscriptions")

ConfigDir = Annotated[
    Path, typer.Option("--config-dir", "-c", help="Folder holding providers.yaml.")
]
ServerUrl = Annotated[
    str,
    typer.Option("--url", envvar="MFO_URL", help="Base URL of a running mfo server."),
]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command("validate-config")
def validate_config(
    config_dir: ConfigDir = Path("config"),
    output_format: Annotated[
        str, typer.Option("--format", help="text or json.")
    ] = "text",
) -> None:
    """Check the config files; print FILE:LINE:COLUMN: message per problem."""
    from gateway.config.loader import check_config

    if output_format not in ("text", "json"):
        _fail(f"invalid --format {output_format!r}; use text or json", code=2)
    if not (config_dir / "providers.yaml").is_file():
        _fail(
            f"{config_dir}/providers.yaml not found; pass the folder that holds it"
            " with --config-dir",
            code=2,
        )
    config, problems = check_config(config_dir)
    if output_format == "json":
        report = {
            "valid": config is not None,
            "problems": [p.as_dict() for p in problems],
        }
        typer.echo(json.dumps(report, indent=2))
    else:
        for problem in problems:
            prefix = "warning: " if problem.severity == "warning" else ""
            typer.echo(
                f"{problem.file}:{problem.line}:{problem.column}: {prefix}{problem.message}"
            )
        if config is not None:
            typer.echo(
                f"{config_dir}: valid ({len(config.routes)} routes,"
                f" {len(config.pipelines)} pipelines,"
                f" {len(config.subscriptions)} subscriptions)"
            )
    raise typer.Exit(0 if config is not None else 1)


@app.command("config-schema")
def config_schema(
    file: Annotated[
        str, typer.Argument(help="providers or subscriptions.")
    ] = "providers",
) -> None:
    """Print the JSON Schema of providers.yaml or subscriptions.yaml."""
    from gateway.config.config_schema import SCHEMAS

    if file not in SCHEMAS:
        _fail(f"unknown config file {file!r}; use providers or subscriptions", code=2)
    typer.echo(json.dumps(SCHEMAS[file](), indent=2))


@app.command()
def routes(config_dir: ConfigDir = Path("config")) -> None:
    """Print the mounted provider routes, their verification and event types."""

    config = _load_config_or_fail(config_dir)
    rows = [("METHOD", "PATH", "ROUTE", "VERIFY", "EVENT TYPES")]
    for route in config.routes:
        types = ", ".join(" ".join(rule.type.source.split()) for rule in route.events)
        rows.append(
            (route.method, route.path, route.qualified_name, route.verify.type, types)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        typer.echo("  ".join([*cells, row[4]]))


@app.command()
def reload(
    url: ServerUrl = "http://127.0.0.1:8080",
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Ask a running server to reload its config; workers follow."""
    try:
        result = _client(url, config_dir).post("/admin/reload", {})
    except CliError as exc:
        _fail(str(exc))
        return
    if result["errors"]:
        for problem in result["errors"]:
            typer.echo(
                f"{problem['file']}:{problem['line']}:{problem['column']}:"
                f" {problem['message']}",
                err=True,
            )
        _fail(f"config rejected; still running version {result['version']}")
    state = "reloaded" if result["reloaded"] else "unchanged"
    typer.echo(f"config {state}: version {result['version']}")


def _load_config_or_fail(config_dir: Path) -> Any:
    """Compile the config, or print each problem and exit 1."""
    from gateway.config.loader import load_config

    try:
        return load_config(config_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        _fail(f"{config_dir} is not valid; run `mfo validate-config -c {config_dir}`")


def _settings(config_dir: Path) -> Any:
    from gateway.settings import Settings

    settings = Settings.from_env(config_dir)
    database = settings.database_url
    if database is not None and not database.startswith(
        ("postgresql://", "postgres://")
    ):
        _fail(
            "MFO_DATABASE_URL must be a postgresql:// URL such as"
            " postgresql://user@127.0.0.1:5432/mfo; unset it to use the embedded database",
            code=2,
        )
    queue = settings.queue_url
    if queue is not None and not queue.startswith(
        ("redis://", "rediss://", "postgresql://", "postgres://")
    ):
        _fail(
            "MFO_QUEUE_URL must be a redis:// or postgresql:// URL;"
            " unset it to keep the queue in the database",
            code=2,
        )
    return settings


@app.command()
def serve(
    config_dir: ConfigDir = Path("config"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    no_worker: Annotated[
        bool,
        typer.Option("--no-worker", help="Serve HTTP only; run `mfo worker` apart."),
    ] = False,
    log_level: Annotated[
        str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
) -> None:
    """Serve provider routes, the API, /healthz and /readyz."""
    import uvicorn

    from gateway.app import create_app

    configure_logging(log_level)
    try:
        application = create_app(_settings(config_dir), run_worker=not no_worker)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        _fail(f"{config_dir} is not valid; run `mfo validate-config -c {config_dir}`")
        return
    except GatewayError as exc:
        _fail(str(exc))
        return
    server = uvicorn.Server(
        # Only a route's own trusted-proxy setting decides whether
        # X-Forwarded-For names the client, so uvicorn must not rewrite it.
        uvicorn.Config(
            application,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
        )
    )
    server.run()
    if getattr(server, "started", True) is False:
        _fail(f"the server did not start on {host}:{port}; see the log above")


@app.command()
def worker(
    config_dir: ConfigDir = Path("config"),
    concurrency: Annotated[int, typer.Option(help="Jobs run at once.")] = 16,
    log_level: Annotated[
        str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics at /metrics on this TCP port."),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address the metrics port listens on.")
    ] = "127.0.0.1",
) -> None:
    """Run deliveries and pipeline jobs; HTTP only for /metrics, if asked."""

    configure_logging(log_level)
    config = _load_config_or_fail(config_dir)
    try:
        metrics = (metrics_host, metrics_port) if metrics_port is not None else None
        asyncio.run(_run_worker(_settings(config_dir), config, concurrency, metrics))
    except GatewayError as exc:
        _fail(str(exc))


async def _run_worker(
    settings: Any, config: Any, concurrency: int, metrics: tuple[str, int] | None
) -> None:
    from gateway.app import Gateway
    from gateway.metrics import MetricsServer

    gateway = Gateway(settings, config)
    await gateway.start(run_worker=False)
    gateway.start_reloader("worker", gateway.apply_config)
    await gateway.fit_pool(concurrency)
    gateway.start_worker(concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_soon, "SIGHUP")
    metrics_server = MetricsServer(gateway, *metrics) if metrics else None
    if metrics_server is not None:
        try:
            await metrics_server.start()
        except GatewayError:
            await gateway.stop()
            raise
    typer.echo(f"mfo worker running ({concurrency} at once); Ctrl-C stops it", err=True)
    await stop.wait()
    if metrics_server is not None:
        await metrics_server.stop()
    await gateway.stop()


@app.command()
def send(
    target: Annotated[
        str, typer.Argument(help="PROVIDER/ROUTE as named in providers.yaml.")
    ],
    payload_file: Annotated[
        Path, typer.Argument(help="File whose bytes are the body.")
    ],
    config_dir: ConfigDir = Path("config"),
    url: ServerUrl = "http://127.0.0.1:8080",
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", help="Extra header 'Name: value'; repeatable."),
    ] = None,
    content_type: Annotated[
        str | None,
        typer.Option(help="Content-Type of the body; guessed from it when left out."),
    ] = None,
) -> None:
    """Sign a payload file as the route's provider would and POST it."""
    import httpx

    from gateway.ingress.request import WebhookRequest
    from gateway.ingress.schemes import build_verifier

    provider, _, route_name = target.partition("/")
    config = _load_config_or_fail(config_dir)
    route = config.route(provider, route_name)
    if route is None:
        known = ", ".join(r.qualified_name for r in config.routes) or "none"
        _fail(f"no route {target!r} in {config_dir}; known routes: {known}")
        return
    try:
        body = payload_file.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {payload_file}: {exc.strerror}")
        return
    headers = {"content-type": content_type or _guess_content_type(body)}
    for item in header or []:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            _fail(f"invalid --header {item!r}; write 'Name: value'", code=2)
        headers[name.strip().lower()] = value.strip()
    target_url = url.rstrip("/") + route.path
    unsigned = WebhookRequest(body, headers, route.method, target_url)
    try:
        signed = build_verifier(route.verify).sign_request(unsigned)
    except GatewayError as exc:
        _fail(f"cannot sign for route {target}: {exc}")
        return
    try:
        response = httpx.request(
            signed.method,
            signed.url,
            content=signed.body,
            headers=dict(signed.headers),
            timeout=30,
        )
    except UnicodeEncodeError:
        _fail("header values must be ASCII text; check the --header options", code=2)
        return
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}; is `mfo serve` running?")
        return
    typer.echo(f"{response.status_code} {response.text}")
    raise typer.Exit(0 if response.is_success else 1)


def _guess_content_type(body: bytes) -> str:
    """Tell JSON from a form body, as Twilio and Slack interactions send forms."""
    try:
        json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text and "=" in text and " " not in text and not text.startswith(("{", "[")):
            return "application/x-www-form-urlencoded"
        return "text/plain; charset=utf-8"
    return "application/json"


def _client(url: str, config_dir: Path) -> ApiClient:
    return ApiClient(url, _settings(config_dir))


@deliveries.command("list")
def deliveries_list(
    status: Annotated[
        str | None, typer.Option(help="pending, succeeded or failed.")
    ] = None,
    subscription: Annotated[
        str | None, typer.Option(help="Subscription id or name.")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option(help="Event type; * is a wildcard.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Age such as 2h, or an ISO time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Created before this age or ISO time.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Maximum number of rows to show.")] = 100,
    output_format: Annotated[
        str, typer.Option("--format", help="table or json.")
    ] = "table",
    url: ServerUrl = "http://127.0.0.1:8080",
    config_dir: ConfigDir = Path("config"),
) -> None:
    """List deliveries, oldest first."""
    if output_format not in ("table", "json"):
        _fail(f"invalid --format {output_format!r}; use table or json", code=2)
    params = {
        "status": status,
        "subscription": subscription,
        "event_type": event_type,
        "since": since,
        "until": until,
    }
    try:
        rows = _client(url, config_dir).list_deliveries(params, limit)
    except CliError as exc:
        _fail(str(exc))
        return
    if output_format == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    columns = (
        "id",
        "status",
        "attempts",
        "last_status",
        "event_type",
        "subscription_name",
        "created_at",
    )
    for row in rows:
        if row.get("held"):
            row["status"] = "held"
    table = [
        [str(row.get(c) if row.get(c) is not None else "-") for c in columns]
        for row in rows
    ]
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
    typer.echo(
        "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
    )
    for line in table:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))
    if len(rows) >= limit:
        typer.echo(
            f"the oldest {len(rows)} matching deliveries; more may match, so"
            " narrow with --since or raise --limit",
            err=True,
        )
    else:
        typer.echo(f"{len(rows)} deliveries", err=True)


@deliveries.command("show")
def deliveries_show(
    delivery_id: str,
    url: ServerUrl = "http://127.0.0.1:8080",
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Show one delivery with every attempt."""
    try:
        row = _client(url, config_dir).get(f"/api/deliveries/{segment(delivery_id)}")
    except CliError as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps(row, indent=2))


@deliveries.command("retry")
def deliveries_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="Delivery ids.")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="Retry deliveries in this status; failed when filtering."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Created within, such as 2h.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Created before this age or time.")
    ] = None,
    subscription: Annotated[
        str | None, typer.Option(help="Subscription id or name.")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option(help="Event type; * is a wildcard.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count.")] = False,
    batch_size: Annotated[
        int, typer.Option(help="Deliveries retried per request, 1 to 1000.")
    ] = 500,
    url: ServerUrl = "http://127.0.0.1:8080",
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Send deliveries again, by id or by filter.

    Batches are queued one request at a time, so the command can be
    interrupted at any point; running it again retries what is left.
    """
    body: dict[str, Any] = {}
    if ids:
        body["ids"] = ids
    for name, value in (
        ("status", status),
        ("since", since),
        ("until", until),
        ("subscription", subscription),
        ("event_type", event_type),
    ):
        if value is not None:
            body[name] = value
    if not body:
        _fail("give delivery ids or a filter such as --status failed", code=2)
    if not 1 <= batch_size <= 1000:
        _fail(f"--batch-size must be between 1 and 1000, not {batch_size}", code=2)
    try:
        client = _client(url, config_dir)
        total = client.post("/api/deliveries/retry", {**body, "dry_run": True})
    except CliError as exc:
        _fail(str(exc))
        return
    if dry_run:
        typer.echo(f"{total['matched']} deliveries would be retried")
        return
    if ids and len(body) == 1:
        _retry_each(client, ids)
        return
    matched, retried = retry_in_batches(client, body, batch_size, total["matched"])
    typer.echo(f"{retried} of {matched} deliveries queued again")


def _retry_each(client: ApiClient, ids: list[str]) -> None:
    """Retry deliveries named on the command line, saying why any was not retried."""
    retried = 0
    for delivery_id in ids:
        try:
            client.post(f"/api/deliveries/{segment(delivery_id)}/retry", {})
        except CliError as exc:
            typer.echo(f"{delivery_id}: not retried: {exc}", err=True)
            continue
        retried += 1
    typer.echo(f"{retried} of {len(ids)} deliveries queued again")
    if retried < len(ids):
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - entry point for `python -m cli.main`
    app(prog_name=os.path.basename(sys.argv[0]) or "mfo")


if __name__ == "__main__":  # pragma: no cover
    main()
