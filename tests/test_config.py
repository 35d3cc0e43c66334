"""Loading, checking and compiling config directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config.loader import check_config, load_config
from gateway.exceptions import ConfigError
from tests.support import REPO

ROUTE = """\
providers:
  acme:
    routes:
      hook:
        path: /webhooks/acme
        verify: {type: header_secret, header: X-Token, secret: s3cret}
        events:
          - type: acme.{{ payload.kind }}
"""


def write_config(
    tmp_path: Path, providers: str, subscriptions: str | None = None
) -> Path:
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "providers.yaml").write_text(textwrap.dedent(providers))
    if subscriptions is not None:
        (config_dir / "subscriptions.yaml").write_text(textwrap.dedent(subscriptions))
    return config_dir


def errors(config_dir: Path, env: dict[str, str] | None = None) -> list[str]:
    _, problems = check_config(config_dir, env or {})
    return [str(p) for p in problems if p.severity == "error"]


def test_shipped_config_is_valid() -> None:
    config = load_config(REPO / "config", env={})
    assert {r.qualified_name for r in config.routes} == {
        "unipile/notify",
        "github/events",
        "stripe/events",
        "slack/events",
        "slack/interactions",
        "shopify/webhooks",
        "twilio/messages",
        "acme/events",
    }
    assert [p.name for p in config.pipelines] == ["draft_reply"]
    assert config.pipelines[0].on == ("unipile.email.received",)


def test_shipped_config_marks_default_secrets() -> None:
    config = load_config(REPO / "config", env={})
    route = config.route("unipile", "notify")
    assert route is not None
    assert route.verify.defaulted_variables == ("UNIPILE_WEBHOOK_SECRET",)
    assert route.verify.secrets == ("dev-unipile-secret",)


def test_env_variable_replaced(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, ROUTE.replace("s3cret", "${ACME_SECRET}"))
    config = load_config(config_dir, env={"ACME_SECRET": "from-env"})
    assert config.routes[0].verify.secrets == ("from-env",)
    assert config.routes[0].verify.defaulted_variables == ()


def test_env_variable_missing_is_located(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, ROUTE.replace("s3cret", "${ACME_SECRET}"))
    found = errors(config_dir)
    assert len(found) == 1
    assert found[0].startswith(f"{_rel(config_dir)}/providers.yaml:6:")
    assert "'ACME_SECRET' is not set and has no default" in found[0]


def test_env_variable_keeps_type(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path, ROUTE + "settings:\n  max_body_size: ${MAX_BODY:-2048}\n"
    )
    config = load_config(config_dir, env={})
    assert config.max_body_bytes == 2048


def test_unknown_key_suggests_nearest(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path, ROUTE.replace("        events:", "        evnts: []\n        events:")
    )
    found = errors(config_dir)
    assert found == [
        f"{_rel(config_dir)}/providers.yaml:7:9: unknown key 'evnts' in route acme/hook;"
        " did you mean 'events'? (allowed: decode, description, events, handshakes,"
        " idempotency_key, max_body_size, method, path, response, schema, verify)"
    ]


def test_missing_required_key(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path, ROUTE.replace("        path: /webhooks/acme\n", "")
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert "route acme/hook is missing the required key 'path'" in found[0]


def test_yaml_syntax_error_located(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, "providers:\n  acme: [unclosed\n")
    found = errors(config_dir)
    assert len(found) == 1
    assert found[0].startswith(f"{_rel(config_dir)}/providers.yaml:3:")
    assert "invalid YAML" in found[0]


def test_wrong_type_reported(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path, ROUTE.replace("path: /webhooks/acme", "path: [1, 2]")
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert (
        ":5:15: route acme/hook.path must be a non-empty string, not a list" in found[0]
    )


def test_missing_schema_file(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path,
        ROUTE.replace(
            "        events:", "        schema: schemas/nope.json\n        events:"
        ),
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert ":7:17: route acme/hook.schema:" in found[0]
    assert "nope.json" in found[0]


def test_bad_template_located(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path, ROUTE.replace("acme.{{ payload.kind }}", "acme.{{ payload.kind")
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert ":8:19: route acme/hook.events[0].type: invalid template" in found[0]


def test_bad_expression_located(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path,
        ROUTE.replace(
            "          - type:", "          - when: payload.kind ==\n            type:"
        ),
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert ":8:19: route acme/hook.events[0].when: invalid expression" in found[0]


def test_two_routes_on_one_path(tmp_path: Path) -> None:
    second = ROUTE.split("    routes:\n")[1].replace("hook:", "other:")
    config_dir = write_config(tmp_path, ROUTE + second)
    found = errors(config_dir)
    assert len(found) == 1
    assert (
        "route acme/other uses POST /webhooks/acme, already used by route acme/hook"
        in found[0]
    )


def test_pipeline_on_key_is_a_string(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path,
        ROUTE
        + "pipelines:\n  p:\n    on: acme.*\n    steps:\n      - transform: {a: 1}\n",
    )
    config = load_config(config_dir, env={})
    assert config.pipelines[0].on == ("acme.*",)


def test_invalid_duration_in_subscription(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path,
        ROUTE,
        "subscriptions:\n  crm:\n    url: https://crm.example.com/h\n    events: ['*']\n"
        "    retry: {schedule: [5s, soon]}\n",
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert "subscriptions.yaml:5:28: subscription 'crm'.retry.schedule" in found[0]
    assert "invalid duration 'soon'" in found[0]


def test_subscription_url_must_be_http(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path, ROUTE, "subscriptions:\n  crm:\n    url: ftp://x\n    events: ['*']\n"
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert "subscriptions.yaml:3:10:" in found[0]
    assert "expected an http:// or https:// URL" in found[0]


def test_broken_route_hides_unmatched_warnings(tmp_path: Path) -> None:
    """A route that fails to compile does not also make its listeners 'unmatched'."""
    config_dir = write_config(
        tmp_path,
        ROUTE.replace("type: header_secret", "type: header_secrt").replace(
            "acme.{{ payload.kind }}", "acme.created"
        ),
        "subscriptions:\n  crm:\n    url: https://crm.example.com/h\n"
        "    events: [acme.created]\n",
    )
    _, problems = check_config(config_dir, {})
    assert [p.severity for p in problems] == ["error"]
    assert "header_secrt" in problems[0].message


def test_unmatched_pattern_is_warning(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path,
        ROUTE.replace("acme.{{ payload.kind }}", "acme.created"),
        "subscriptions:\n  crm:\n    url: https://crm.example.com/h\n    events: [billing.*]\n",
    )
    config, problems = check_config(config_dir, {})
    assert config is not None
    assert [p.severity for p in problems] == ["warning"]
    assert (
        "listens for 'billing.*', which no route or pipeline emits"
        in problems[0].message
    )


def test_load_config_raises_with_every_problem(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, "providers:\n  acme:\n    routez: {}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config_dir, env={})
    messages = [p.message for p in raised.value.problems]
    assert any("unknown key 'routez'" in m for m in messages)
    assert any("missing the required key 'routes'" in m for m in messages)


def test_verify_section_required(tmp_path: Path) -> None:
    text = ROUTE.replace(
        "        verify: {type: header_secret, header: X-Token, secret: s3cret}\n", ""
    )
    found = errors(write_config(tmp_path, text))
    assert any("missing the required key 'verify'" in f for f in found)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_validate_config_cli_valid() -> None:
    result = run_cli("validate-config", "--config-dir", str(REPO / "config"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid (8 routes, 1 pipelines" in result.stdout


def test_validate_config_cli_invalid(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path, ROUTE.replace("header: X-Token", "heder: X-Token")
    )
    result = run_cli("validate-config", "--config-dir", str(config_dir))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert any(":6:" in line and "unknown key 'heder'" in line for line in lines)
    assert all(line.split(":")[0].endswith("providers.yaml") for line in lines)


def test_validate_config_cli_json(tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path, ROUTE.replace("header: X-Token", "heder: X-Token")
    )
    result = run_cli(
        "validate-config", "--config-dir", str(config_dir), "--format", "json"
    )
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["valid"] is False
    assert report["problems"][0]["line"] == 6


def _rel(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path.absolute()) if relative.startswith("..") else relative


def test_block_template_error_points_inside(tmp_path: Path) -> None:
    """A broken line inside a `|` block is reported on that line of the file."""
    text = ROUTE + (
        "pipelines:\n  p:\n    on: acme.created\n    steps:\n"
        "      - name: body\n        transform:\n          text: |\n"
        "            line one\n            {{ event.data.x\n            line three\n"
    )
    found = errors(write_config(tmp_path, text))
    # Jinja notices the unclosed {{ on the block's third line, file line 18.
    assert len(found) == 1
    assert "providers.yaml:18:1: pipeline 'p'.steps[0].transform.text" in found[0]
    assert "invalid template" in found[0]
    assert "(template line 3)" in found[0]


def test_tree_leaf_error_located(tmp_path: Path) -> None:
    """A broken leaf deep in an emit's data is reported at the leaf."""
    text = ROUTE + (
        "pipelines:\n  p:\n    on: acme.created\n    steps:\n"
        "      - emit:\n          type: x.y\n          data:\n"
        "            ok: '{{ event.id }}'\n            bad: '{{ event.id'\n"
    )
    found = errors(write_config(tmp_path, text))
    assert len(found) == 1
    assert "providers.yaml:17:18:" in found[0]
    assert ".data.bad: invalid template" in found[0]


def test_schema_not_json(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "bad.json").write_text("{not json")
    config_dir = write_config(
        tmp_path,
        ROUTE.replace(
            "        events:", "        schema: schemas/bad.json\n        events:"
        ),
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert ":7:17: route acme/hook.schema:" in found[0]
    assert "JSON" in found[0]


def test_schema_not_a_schema(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "bad.json").write_text('{"type": 5}')
    config_dir = write_config(
        tmp_path,
        ROUTE.replace(
            "        events:", "        schema: schemas/bad.json\n        events:"
        ),
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert ":7:17: route acme/hook.schema:" in found[0]
    assert "bad.json" in found[0]


def test_validate_config_usage_errors(tmp_path: Path) -> None:
    missing = run_cli("validate-config", "--config-dir", str(tmp_path / "nowhere"))
    bad_format = run_cli("validate-config", "--format", "xml")
    assert missing.returncode == 2
    assert "providers.yaml not found" in missing.stderr
    assert bad_format.returncode == 2


def test_config_schema_matches_shipped_files() -> None:
    """The schemas in docs/schemas are what `mfo config-schema` prints."""
    for name in ("providers", "subscriptions"):
        result = run_cli("config-schema", name)
        shipped = (REPO / "docs" / "schemas" / f"{name}.schema.json").read_text()
        assert result.returncode == 0
        assert json.loads(result.stdout) == json.loads(shipped)


def test_shipped_config_passes_config_schema() -> None:
    import jsonschema

    from gateway.config.config_schema import SCHEMAS
    from gateway.config.source import load_yaml_file

    for name in ("providers", "subscriptions"):
        loaded = load_yaml_file(REPO / "config" / f"{name}.yaml", name, env={})
        jsonschema.Draft202012Validator(SCHEMAS[name]()).validate(loaded.root)


def test_config_schema_rejects_typo() -> None:
    import jsonschema

    from gateway.config.config_schema import providers_schema

    document = {
        "providers": {
            "a": {
                "routes": {
                    "r": {
                        "path": "/x",
                        "verify": {"type": "none"},
                        "events": [{"type": "a"}],
                        "evnts": [],
                    }
                }
            }
        }
    }
    validator = jsonschema.Draft202012Validator(providers_schema())
    assert not validator.is_valid(document)


def test_routes_command_lists_routes() -> None:
    result = run_cli("routes", "--config-dir", str(REPO / "config"))
    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert lines[0].split() == ["METHOD", "PATH", "ROUTE", "VERIFY", "EVENT", "TYPES"]
    unipile = next(line for line in lines if "unipile/notify" in line)
    assert "/webhooks/unipile/notify" in unipile
    assert "header_secret" in unipile
    assert "unipile.email.received, unipile.email.sent" in unipile


def test_unmatched_pattern_with_templated_types(tmp_path: Path) -> None:
    """A templated type `acme.{{...}}` can feed acme.* but never billing.*."""
    config_dir = write_config(
        tmp_path,
        ROUTE,
        "subscriptions:\n  a:\n    url: https://a.example.com/h\n    events: [acme.*]\n"
        "  b:\n    url: https://b.example.com/h\n    events: [billing.paid]\n",
    )
    _, problems = check_config(config_dir, {})
    warnings = [p.message for p in problems if p.severity == "warning"]
    assert warnings == [
        "subscription 'b' listens for 'billing.paid', which no route or pipeline emits"
    ]


def test_pipeline_loop_rejected(tmp_path: Path) -> None:
    """A pipeline emitting a type it listens for is an error at its location."""
    text = ROUTE + (
        "pipelines:\n  echo:\n    on: acme.*\n    steps:\n"
        "      - emit: {type: acme.again}\n"
    )
    found = errors(write_config(tmp_path, text))
    assert len(found) == 1
    assert "providers.yaml:11:5: pipeline 'echo' starts itself again" in found[0]


def test_pipeline_loop_through_two(tmp_path: Path) -> None:
    text = ROUTE + (
        "pipelines:\n  a:\n    on: acme.*\n    steps:\n      - emit: {type: b.x}\n"
        "  b:\n    on: b.x\n    steps:\n      - emit: {type: acme.y}\n"
    )
    found = errors(write_config(tmp_path, text))
    assert any("pipeline 'a' starts itself again (a -> b -> a" in f for f in found)


def test_reserved_route_path(tmp_path: Path) -> None:
    found = errors(
        write_config(tmp_path, ROUTE.replace("/webhooks/acme", "/api/deliveries"))
    )
    assert len(found) == 1
    assert (
        "path '/api/deliveries' is under /api, which the gateway itself serves"
        in found[0]
    )


def test_empty_providers_is_warning(tmp_path: Path) -> None:
    config, problems = check_config(write_config(tmp_path, ""), {})
    assert config is not None
    assert [p.message for p in problems] == [
        "no providers are declared, so the gateway accepts no webhooks"
    ]


def test_alias_bomb_stopped(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 10)}]")
    found = errors(write_config(tmp_path, "\n".join(lines) + "\n"))
    assert any("expands to more than 200000 values" in f for f in found)


def test_empty_secret_message(tmp_path: Path) -> None:
    found = errors(
        write_config(tmp_path, ROUTE.replace("secret: s3cret", 'secret: ""'))
    )
    assert any("not an empty string" in f for f in found)


def test_yaml_error_keeps_context(tmp_path: Path) -> None:
    found = errors(write_config(tmp_path, "providers:\n  a: {b: 1\n\n\n  c: 2\n"))
    assert len(found) == 1
    assert "at line 2)" in found[0]


@pytest.mark.parametrize(
    "line, message",
    [
        ("    url: https://a.example:99999/h\n", "is not a valid URL"),
        (
            "    url: https://a.example/h\n    headers: {Content-Length: '5'}\n",
            "is set by the gateway",
        ),
    ],
)
def test_subscription_url_and_headers_checked(
    tmp_path: Path, line: str, message: str
) -> None:
    config_dir = write_config(
        tmp_path, ROUTE, "subscriptions:\n  crm:\n" + line + "    events: ['*']\n"
    )
    found = errors(config_dir)
    assert len(found) == 1
    assert "subscriptions.yaml:" in found[0]
    assert message in found[0]


@pytest.mark.parametrize(
    "value", ["${ACME_SECRET:-dev", "${ACME_SECRET", "${1BAD}", "pre-${ACME_SECRET:-x"]
)
def test_env_variable_unclosed_rejected(tmp_path: Path, value: str) -> None:
    config_dir = write_config(tmp_path, _block_verify(value))
    found = errors(config_dir, env={"ACME_SECRET": "set"})
    assert len(found) == 1
    assert found[0].startswith(f"{_rel(config_dir)}/providers.yaml:9:")
    assert "invalid variable reference" in found[0]
    assert "closing brace" in found[0]


def _block_verify(secret: str) -> str:
    """Return ROUTE with `verify` as a block mapping whose secret is `secret`."""
    block = (
        "verify:\n          type: header_secret\n          header: X-Token\n"
        f"          secret: {secret}"
    )
    return ROUTE.replace(
        "verify: {type: header_secret, header: X-Token, secret: s3cret}", block
    )


def test_env_variable_escape_kept(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, _block_verify("a$${b"))
    config = load_config(config_dir, env={})
    assert config.routes[0].verify.secrets == ("a${b",)


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("providers:\n\tacme: {}\n", "indent with spaces"),
        ("providers:\n  acme: a: b\n", "quote a value"),
        ("providers:\n  acme:\n    a: 1\n   b: 2\n", "same column"),
    ],
)
def test_yaml_error_suggests_fix(tmp_path: Path, text: str, hint: str) -> None:
    config_dir = write_config(tmp_path, text)
    found = errors(config_dir)
    assert len(found) == 1
    assert "invalid YAML" in found[0]
    assert hint in found[0]
