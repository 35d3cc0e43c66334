"""Tests for gateway.config.schemas: loading, reference checks and validation."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.config.schemas import (
    MAX_ERRORS,
    MAX_MESSAGE_CHARS,
    CompiledSchema,
    SchemaLoadError,
    SchemaRegistry,
)
from gateway.exceptions import GatewayError

DATA_DIR = Path(__file__).resolve().parent / "data"
DRAFT7_URI = "http://json-schema.org/draft-07/schema#"
TOO_DEEP_MESSAGE = (
    "instance is nested too deeply to validate: Python's recursion limit was reached"
)

GITHUB_EXAMPLE_COUNT = 273


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry(DATA_DIR)


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# Dialects


def test_no_dollar_schema_is_draft7(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/draft7/dependencies.json")

    assert compiled.dialect == DRAFT7_URI
    # "dependencies" is enforced by Draft 7 and ignored by Draft 2020-12.
    assert compiled.errors({"start": 1}) == [
        {"pointer": "", "message": "'end' is a dependency of 'start'"}
    ]
    assert compiled.errors({"start": 1, "end": 2}) == []


def test_draft2020_prefix_items(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/draft2020/point.json")

    assert compiled.dialect == "https://json-schema.org/draft/2020-12/schema"
    assert compiled.errors({"point": [1.5, 2]}) == []
    errors = compiled.errors({"point": [1, "x"]})
    assert errors == [{"pointer": "/point/1", "message": "'x' is not of type 'number'"}]


def test_draft2020_extra_items_rejected(registry: SchemaRegistry) -> None:
    errors = registry.load("schemas/draft2020/point.json").errors({"point": [1, 2, 3]})

    assert [error["pointer"] for error in errors] == ["/point"]


def test_draft4_exclusive_minimum(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/draft4/exclusive.json")

    assert compiled.dialect == "http://json-schema.org/draft-04/schema#"
    assert [error["pointer"] for error in compiled.errors({"count": 5})] == ["/count"]
    assert compiled.errors({"count": 5.5}) == []


def test_draft6_ignores_conditionals(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/draft6/no_conditionals.json")

    assert compiled.dialect == "http://json-schema.org/draft-06/schema#"
    assert compiled.errors({"a": 1}) == []
    assert [error["pointer"] for error in compiled.errors({"n": 5})] == ["/n"]


def test_draft2019_dependent_required(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/draft2019/dependent_required.json")

    errors = compiled.errors({"start": 1, "limits": {"a": 1, "b": 2}})

    assert compiled.dialect == "https://json-schema.org/draft/2019-09/schema"
    assert [error["pointer"] for error in errors] == ["", "/limits"]
    assert errors[0]["message"] == "'end' is a dependency of 'start'"


def test_referenced_file_without_schema_is_draft7(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/draft2020/uses_draft7_file.json")

    errors = compiled.errors({"range": {"start": 1}})

    assert errors == [
        {"pointer": "/range", "message": "'end' is a dependency of 'start'"}
    ]


def test_unknown_dialect_rejected(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaLoadError) as raised:
        registry.load("schemas/broken/unknown_dialect.json")

    assert "schemas/broken/unknown_dialect.json" in str(raised.value)
    assert "http://example.com/my-dialect" in str(raised.value)
    assert raised.value.path == "schemas/broken/unknown_dialect.json"


def test_draft3_rejected(tmp_path: Path) -> None:
    schema = {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object"}
    (tmp_path / "old.json").write_text(json.dumps(schema))

    with pytest.raises(SchemaLoadError, match="not a supported dialect"):
        SchemaRegistry(tmp_path).load("old.json")


def test_non_string_dialect_rejected(tmp_path: Path) -> None:
    (tmp_path / "odd.json").write_text('{"$schema": 7}')

    with pytest.raises(SchemaLoadError, match=r"odd\.json"):
        SchemaRegistry(tmp_path).load("odd.json")


# References between files


def test_cross_file_refs(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/draft7/root.json")
    instance = {"user": {"id": "x", "name": "a" * 30}, "tags": [1]}

    errors = compiled.errors(instance)

    assert [error["pointer"] for error in errors] == [
        "/tags/0",
        "/user/id",
        "/user/name",
    ]
    assert compiled.errors({"user": {"id": 1, "name": "ada"}, "tags": ["a"]}) == []


def test_ref_search_path_fallback(registry: SchemaRegistry) -> None:
    # events/push.json refers to "common/actor.json", which exists only
    # relative to the parent folder, and actor.json refers to its sibling.
    compiled = registry.load("schemas/search/events/push.json")

    errors = compiled.errors({"sender": {"login": 1, "links": {}}})

    assert errors == [
        {"pointer": "/sender/links", "message": "'href' is a required property"},
        {"pointer": "/sender/login", "message": "1 is not of type 'string'"},
    ]


def test_ref_into_unknown_keyword(registry: SchemaRegistry) -> None:
    # Draft 7 has no "$defs", so the target and its own file $ref are found
    # only by following the JSON pointer.
    compiled = registry.load("schemas/draft7/defs_pointer.json")

    errors = compiled.errors({"owner": {"id": "x"}})

    assert errors == [
        {"pointer": "/owner/id", "message": "'x' is not of type 'integer'"}
    ]


def test_anchor_and_cross_dialect_refs(registry: SchemaRegistry) -> None:
    # A 2020-12 "$anchor" and a pointer into a Draft 7 file.
    compiled = registry.load("schemas/anchors/anchors.json")

    errors = compiled.errors({"name": "", "user": 5})

    assert [error["pointer"] for error in errors] == ["/name", "/user"]
    assert compiled.errors({"name": "ada", "user": "ada"}) == []


def test_ref_cycle_between_files(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/cycle/a.json")

    errors = compiled.errors({"child": {"parent": {"name": 5}}})

    assert errors == [
        {"pointer": "/child/parent/name", "message": "5 is not of type 'string'"}
    ]


def test_meta_schema_ref_offline(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/meta/uses_meta.json")

    assert compiled.errors({"type": "object"}) == []
    assert [error["pointer"] for error in compiled.errors({"type": 5})] == ["/type"]


def test_loaded_schema_keeps_original_refs(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/draft7/root.json")

    assert isinstance(compiled.schema, dict)
    assert compiled.schema["properties"]["user"] == {"$ref": "common/user.json"}
    assert "$schema" not in compiled.schema


# Errors at load time


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("schemas/missing.json", "not found"),
        ("schemas/broken/invalid_json.json", "not valid JSON"),
        ("schemas/broken/invalid_schema.json", "not a valid Draft 7 schema"),
        ("schemas/broken/invalid_in_defs.json", "'/$defs/x/type'"),
        ("schemas/broken/unresolvable_ref.json", "'nope.json'"),
        ("schemas/broken/escaping_ref.json", "outside the config root"),
        ("schemas/broken/http_ref.json", "never fetched over the network"),
        ("schemas/broken/bad_pointer.json", "'/definitions/missing' does not exist"),
        ("schemas/broken/pointer_through_list.json", "'/allOf/x' does not exist"),
        ("schemas/broken/missing_anchor.json", "anchor 'missing' does not exist"),
        ("schemas/broken/ref_to_string.json", "points to a JSON string"),
    ],
)
def test_load_error_names_file(
    registry: SchemaRegistry, path: str, expected: str
) -> None:
    with pytest.raises(SchemaLoadError) as raised:
        registry.load(path)

    assert path in str(raised.value)
    assert expected in str(raised.value)
    assert raised.value.path == path


def test_load_error_is_gateway_error(registry: SchemaRegistry) -> None:
    with pytest.raises(GatewayError):
        registry.load("schemas/missing.json")


def test_broken_ref_in_referenced_file(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaLoadError) as raised:
        registry.load("schemas/broken/outer.json")

    assert raised.value.path == "schemas/broken/inner_broken.json"
    assert raised.value.ref == "missing/deeper.json"
    assert "'/properties/y/$ref'" in str(raised.value)


def test_unresolvable_ref_lists_paths_tried(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaLoadError) as raised:
        registry.load("schemas/broken/unresolvable_ref.json")

    assert "schemas/broken/nope.json" in str(raised.value)
    assert "schemas/nope.json" in str(raised.value)


def test_invalid_json_reports_position(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaLoadError, match="line 1 column 19"):
        registry.load("schemas/broken/invalid_json.json")


def test_not_utf8_rejected(tmp_path: Path) -> None:
    (tmp_path / "latin1.json").write_bytes(b'{"title": "caf\xe9"}')

    with pytest.raises(SchemaLoadError, match=r"latin1\.json.*not valid UTF-8"):
        SchemaRegistry(tmp_path).load("latin1.json")


def test_nan_constant_rejected(tmp_path: Path) -> None:
    (tmp_path / "nan.json").write_text('{"maximum": NaN}')

    with pytest.raises(SchemaLoadError, match=r"nan\.json.*NaN is not a JSON value"):
        SchemaRegistry(tmp_path).load("nan.json")


def test_root_outside_base_dir_rejected(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaLoadError, match="outside the config root"):
        registry.load("../test_schemas.py")


def test_root_directory_rejected(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaLoadError, match="is a directory"):
        registry.load("schemas/draft7")


def test_ref_escaping_by_absolute_file_uri(tmp_path: Path) -> None:
    (tmp_path / "abs.json").write_text('{"$ref": "file:///etc/hostname"}')

    with pytest.raises(SchemaLoadError, match=r"abs\.json.*outside the config root"):
        SchemaRegistry(tmp_path).load("abs.json")


def test_ref_escaping_to_missing_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.json").write_text('{"$ref": "../sibling/b.json"}')

    with pytest.raises(SchemaLoadError, match="outside the config root"):
        SchemaRegistry(root).load("a.json")


# Registry behaviour


def test_load_is_cached(registry: SchemaRegistry) -> None:
    first = registry.load("schemas/draft7/root.json")

    assert registry.load("schemas/draft7/root.json") is first
    assert registry.load("schemas/draft7/../draft7/root.json") is first


def test_absolute_path_allowed(registry: SchemaRegistry) -> None:
    path = DATA_DIR / "schemas" / "object.json"

    compiled = registry.load(str(path))

    assert compiled.path == str(path)
    assert compiled.errors({"id": 1}) == []


def test_compiled_schema_is_frozen(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/object.json")

    with pytest.raises(dataclasses.FrozenInstanceError):
        compiled.path = "other.json"  # type: ignore[misc]


def test_path_kept_as_given(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/pointers/escaping.json")

    assert isinstance(compiled, CompiledSchema)
    assert compiled.path == "schemas/pointers/escaping.json"


# Validation results


def test_boolean_root_schemas(tmp_path: Path) -> None:
    (tmp_path / "anything.json").write_text("true")
    (tmp_path / "nothing.json").write_text("false")
    registry = SchemaRegistry(tmp_path)

    assert registry.load("anything.json").errors({"a": [1]}) == []
    errors = registry.load("nothing.json").errors(None)
    assert [error["pointer"] for error in errors] == [""]


def test_pointer_escaping(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/pointers/escaping.json")

    errors = compiled.errors({"a/b": 1, "c~d": 2})

    assert [error["pointer"] for error in errors] == ["/a~1b", "/c~0d"]


@pytest.mark.parametrize("instance", [[], [1, 2], 1, 1.5, "text", True, None])
def test_non_object_instances(registry: SchemaRegistry, instance: Any) -> None:
    errors = registry.load("schemas/object.json").errors(instance)

    assert len(errors) == 1
    assert errors[0]["pointer"] == ""
    assert "is not of type 'object'" in errors[0]["message"]


def test_errors_capped_and_sorted(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/object.json")

    errors = compiled.errors({"id": 1, "items": ["x"] * 200})

    pointers = [error["pointer"] for error in errors]
    assert len(errors) == MAX_ERRORS
    assert pointers == sorted(pointers)
    assert pointers[0] == "/items/0"


def test_long_message_truncated(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/object.json")

    errors = compiled.errors({"id": "x" * 100_000})

    assert len(errors) == 1
    assert len(errors[0]["message"]) == MAX_MESSAGE_CHARS
    assert errors[0]["message"].endswith("...")


def test_deep_list_non_recursive_schema(registry: SchemaRegistry) -> None:
    errors = registry.load("schemas/object.json").errors(nested_list(500))

    assert isinstance(errors, list)
    assert [error["pointer"] for error in errors] == [""]


def test_deep_list_recursive_schema(registry: SchemaRegistry) -> None:
    compiled = registry.load("schemas/recursive/nested_list.json")

    assert compiled.errors(nested_list(50)) == []
    # jsonschema uses several Python frames per level, so 500 levels may
    # exceed the recursion limit. The result is a list either way.
    assert compiled.errors(nested_list(500)) in (
        [],
        [{"pointer": "", "message": TOO_DEEP_MESSAGE}],
    )


def test_very_deep_list_recursive_schema(registry: SchemaRegistry) -> None:
    errors = registry.load("schemas/recursive/nested_list.json").errors(
        nested_list(20_000)
    )

    assert errors == [{"pointer": "", "message": TOO_DEEP_MESSAGE}]


def test_deep_invalid_item_pointer(registry: SchemaRegistry) -> None:
    instance = nested_list(40)
    innermost = instance
    for _ in range(39):
        innermost = innermost[0]
    innermost.append(5)

    errors = registry.load("schemas/recursive/nested_list.json").errors(instance)

    assert errors == [
        {"pointer": "/0" * 39 + "/1", "message": "5 is not of type 'array'"}
    ]


# The GitHub corpus: octokit/webhooks payload examples and their schemas


def github_corpus_dir() -> Path:
    configured = os.environ.get("MFO_CORPUS_DIR")
    if configured:
        return Path(configured) / "github"
    return Path(__file__).resolve().parents[2] / "shared" / "corpus" / "github"


@pytest.fixture(scope="module")
def github_dir() -> Path:
    directory = github_corpus_dir()
    if not directory.is_dir():
        pytest.skip(
            f"GitHub corpus not found at {directory}; set MFO_CORPUS_DIR to the "
            "folder that contains github/"
        )
    return directory


@pytest.fixture(scope="module")
def github_registry(github_dir: Path) -> SchemaRegistry:
    return SchemaRegistry(github_dir)


@pytest.fixture(scope="module")
def github_examples(github_dir: Path) -> dict[str, tuple[str, Any]]:
    """Map each example's name (event/file) to its schema path and payload."""
    examples_dir = github_dir / "payload-examples" / "api.github.com"
    schemas_dir = github_dir / "payload-schemas" / "api.github.com"
    examples: dict[str, tuple[str, Any]] = {}
    for path in sorted(examples_dir.glob("*/*.json")):
        payload = json.loads(path.read_text(encoding="utf-8"))
        schema = github_schema_for(schemas_dir / path.parent.name, payload)
        name = f"{path.parent.name}/{path.name}"
        examples[name] = (schema.relative_to(github_dir).as_posix(), payload)

    return examples


def github_schema_for(event_dir: Path, payload: Any) -> Path:
    action = payload.get("action") if isinstance(payload, dict) else None
    if isinstance(action, str):
        action_schema = event_dir / f"{action}.schema.json"
        if action_schema.is_file():
            return action_schema
    return event_dir / "event.schema.json"


def test_github_example_count(github_examples: dict[str, tuple[str, Any]]) -> None:
    assert len(github_examples) == GITHUB_EXAMPLE_COUNT


def test_github_examples_validate(
    github_registry: SchemaRegistry, github_examples: dict[str, tuple[str, Any]]
) -> None:
    failures = {}
    for name, (schema_path, payload) in github_examples.items():
        errors = github_registry.load(schema_path).errors(payload)
        if errors:
            failures[name] = (schema_path, errors[:3])

    assert failures == {}


def test_github_uri_format_asserted(
    github_registry: SchemaRegistry, github_examples: dict[str, tuple[str, Any]]
) -> None:
    """The oneOf of a "uri" string and "" needs the uri format checked to pass."""
    schema_path, payload = github_examples["deployment_status/gh-pages.payload.json"]
    payload = json.loads(json.dumps(payload))
    payload["deployment_status"]["environment_url"] = "not a uri"

    errors = github_registry.load(schema_path).errors(payload)

    assert [error["pointer"] for error in errors] == [
        "/deployment_status/environment_url"
    ]


def test_github_date_time_format_lenient(
    github_registry: SchemaRegistry, github_examples: dict[str, tuple[str, Any]]
) -> None:
    """GitHub sends "2018-04-25 20:42:10" in date-time fields; it must pass."""
    schema_path, payload = github_examples["check_run/rerequested.payload.json"]

    assert payload["check_run"]["app"]["created_at"] == "2018-04-25 20:42:10"
    assert github_registry.load(schema_path).errors(payload) == []


def github_push(
    github_registry: SchemaRegistry, github_examples: dict[str, tuple[str, Any]]
) -> tuple[CompiledSchema, dict[str, Any]]:
    schema_path, payload = github_examples["push/payload.json"]
    return github_registry.load(schema_path), copy.deepcopy(payload)


def test_github_push_missing_ref(
    github_registry: SchemaRegistry, github_examples: dict[str, tuple[str, Any]]
) -> None:
    compiled, payload = github_push(github_registry, github_examples)
    del payload["ref"]

    errors = compiled.errors(payload)

    assert errors == [{"pointer": "", "message": "'ref' is a required property"}]


def test_github_push_ref_wrong_type(
    github_registry: SchemaRegistry, github_examples: dict[str, tuple[str, Any]]
) -> None:
    compiled, payload = github_push(github_registry, github_examples)
    payload["ref"] = 7

    errors = compiled.errors(payload)

    assert errors == [{"pointer": "/ref", "message": "7 is not of type 'string'"}]


def test_github_push_error_in_common_file(
    github_registry: SchemaRegistry, github_examples: dict[str, tuple[str, Any]]
) -> None:
    # "sender" is checked by common/user.schema.json, reached by the search path.
    compiled, payload = github_push(github_registry, github_examples)
    payload["sender"]["login"] = 5

    errors = compiled.errors(payload)

    assert errors == [
        {"pointer": "/sender/login", "message": "5 is not of type 'string'"}
    ]
