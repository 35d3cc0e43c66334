"""Options and helpers that the API-calling subcommands share."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer

from cli.client import ApiClient, CliError

ConfigDir = Annotated[
    Path, typer.Option("--config-dir", "-c", help="Folder holding providers.yaml.")
]
ServerUrl = Annotated[
    str,
    typer.Option("--url", envvar="MFO_URL", help="Base URL of a running mfo server."),
]
DEFAULT_URL = "http://127.0.0.1:8080"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def connect(url: str, config_dir: Path) -> ApiClient:
    """Build an API client with the token from the environment or the data directory."""
    from gateway.settings import Settings

    try:
        return ApiClient(url, Settings.from_env(config_dir))
    except CliError as exc:
        fail(str(exc))


def call(url: str, config_dir: Path, method: str, path: str, body: Any = None) -> Any:
    """Call the API once and return its JSON, or exit 1 with the server's message."""
    client = connect(url, config_dir)
    try:
        if method == "GET":
            return client.get(path)
        return client.post(path, body or {})
    except CliError as exc:
        fail(str(exc))


def segment(value: str) -> str:
    """Quote an id for one path segment, so '../x' or '?' cannot change the path."""
    return quote(value, safe="")


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def retry_in_batches(
    client: ApiClient, body: dict[str, Any], batch_size: int, total: int
) -> tuple[int, int]:
    """Retry page by page with a progress bar on stderr when there is more than one."""
    matched, retried = 0, 0
    show_bar = total > batch_size
    bar = typer.progressbar(length=total, label="retrying deliveries", file=sys.stderr)
    try:
        with bar if show_bar else contextlib.nullcontext():
            for page in client.retry_deliveries(body, batch_size):
                matched += page["matched"]
                retried += page["retried"]
                if show_bar:
                    bar.update(page["matched"])
    except KeyboardInterrupt:
        typer.echo(
            f"interrupted after queueing {retried} of {total} deliveries; run the"
            " same command again to retry the rest",
            err=True,
        )
        raise typer.Exit(130) from None
    except CliError as exc:
        fail(f"{exc}; {retried} deliveries were queued before the failure")
    return matched, retried
