"""A config with one route per GitHub schema validates the corpus through HTTP."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config.loader import load_config
from tests.support import CORPUS, Gateway, start_gateway
from tests.test_end_to_end import github_examples, github_headers

SECRET = "corpus-secret"


def schema_for(schemas: Path, event: str, payload: Any) -> Path:
    action = payload.get("action") if isinstance(payload, dict) else None
    candidate = schemas / event / f"{action}.schema.json"
    if isinstance(action, str) and candidate.is_file():
        return candidate
    return schemas / event / "event.schema.json"


def write_corpus_config(root: Path) -> Path:
    """Copy the corpus schemas and declare a route for each root schema file."""
    source = CORPUS / "github" / "payload-schemas" / "api.github.com"
    if not source.is_dir():
        pytest.skip(f"no GitHub schemas in {source}")
    schemas = root / "schemas" / "github"
    shutil.copytree(source, schemas)
    lines = ["providers:", "  github:", "    routes:"]
    for schema in sorted(schemas.glob("*/*.schema.json")):
        event, action = schema.parent.name, schema.name.removesuffix(".schema.json")
        if event == "common":
            continue
        lines += [
            f"      {event}.{action}:",
            f"        path: /github/{event}/{action}",
            "        verify: {type: hmac, header: X-Hub-Signature-256,"
            f" prefix: 'sha256=', secret: {SECRET}}}",
            f"        schema: {schema.relative_to(root).as_posix()}",
            "        events:",
            f"          - type: github.{event}.{action}",
        ]
    config_dir = root / "config"
    config_dir.mkdir()
    (config_dir / "providers.yaml").write_text("\n".join(lines) + "\n")
    return config_dir


@pytest.fixture(scope="module")
def corpus_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("corpus")
    config_dir = write_corpus_config(root)
    running = start_gateway(config_dir, root / "data")
    yield running
    running.stop()


def test_corpus_config_compiles(tmp_path: Path) -> None:
    config = load_config(write_corpus_config(tmp_path), env={})
    assert len(config.routes) > 200
    assert all(route.schema is not None for route in config.routes)


def test_corpus_examples_accepted(corpus_gateway: Gateway) -> None:
    """Every GitHub example passes its own schema on its own route."""
    schemas = CORPUS / "github" / "payload-schemas" / "api.github.com"
    examples = github_examples()
    assert len(examples) == 273
    rejected = {}
    with httpx.Client(base_url=corpus_gateway.base_url, timeout=30) as client:
        for event, path in examples:
            body = path.read_bytes()
            schema = schema_for(schemas, event, json.loads(body))
            url = f"/github/{event}/{schema.name.removesuffix('.schema.json')}"
            response = client.post(
                url, content=body, headers=github_headers(event, body, SECRET)
            )
            if response.status_code != 202:
                rejected[str(path)] = (response.status_code, response.text[:300])
    assert rejected == {}


def test_corpus_mismatch_rejected_with_pointer(corpus_gateway: Gateway) -> None:
    """A push payload without `ref` gets 400 naming the missing property."""
    body_value = json.loads(
        (
            CORPUS
            / "github"
            / "payload-examples"
            / "api.github.com"
            / "push"
            / "payload.json"
        ).read_text()
    )
    del body_value["ref"]
    body = json.dumps(body_value).encode()

    response = httpx.post(
        corpus_gateway.base_url + "/github/push/event",
        content=body,
        headers=github_headers("push", body, SECRET),
    )

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors == [{"pointer": "", "message": "'ref' is a required property"}]
