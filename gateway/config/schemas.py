"""Load the JSON Schemas that routes name and compile them into validators.

A route's ``schema:`` key names a JSON Schema file under the config root.
`SchemaRegistry.load` reads that file and every file that its ``$ref`` keywords
reach, checks each file against its dialect's meta-schema, resolves every
reference once, and returns a `CompiledSchema` whose ``errors()`` method runs
on the ingress hot path.

Rules for dialects and references:

- A file without ``$schema`` is Draft 7. Drafts 4, 6, 7, 2019-09 and 2020-12
  are supported. Any other ``$schema`` value is an error.
- A ``$ref`` with a path part is resolved against the location of the file
  that contains it. When no file exists there, the same path is tried against
  the root schema's directory and each parent directory up to the nearest
  ``schemas/`` folder (or up to the config root). GitHub's published webhook
  schemas need this: their ``$id`` values are not URLs (``"push$event"``), and
  ``push/event.schema.json`` refers to ``common/user.schema.json``.
- Nothing is fetched over the network. A URL resolves only to a standard
  meta-schema (bundled with ``jsonschema-specifications``) or to a loaded
  schema that declares that URL as its ``$id``.
- No reference may resolve to a path outside the config root, after symlinks
  are followed.

Each loaded file is copied, and every file reference in the copy is rewritten
to the absolute ``file:`` URI of the file that it resolved to. The validator
then looks every reference up in an in-memory registry and never searches the
disk again.
"""

from __future__ import annotations

import copy
import heapq
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit
from urllib.request import url2pathname

from jsonschema import (
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
    FormatChecker,
)
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from jsonschema_specifications import (  # type: ignore[import-untyped]
    REGISTRY as META_SCHEMA_REGISTRY,
)
from referencing import Registry, Resource, Specification
from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable
from referencing.jsonschema import specification_with

from gateway.exceptions import GatewayError

__all__ = ["CompiledSchema", "SchemaLoadError", "SchemaRegistry"]

MAX_ERRORS = 50
MAX_MESSAGE_CHARS = 300
DEFAULT_DIALECT = "http://json-schema.org/draft-07/schema#"

_DIALECT_NAMES: dict[type[Validator], str] = {
    Draft4Validator: "Draft 4",
    Draft6Validator: "Draft 6",
    Draft7Validator: "Draft 7",
    Draft201909Validator: "Draft 2019-09",
    Draft202012Validator: "Draft 2020-12",
}
_DIALECTS_BY_URI: dict[str, type[Validator]] = {
    urlsplit(cls.META_SCHEMA.get("$id") or cls.META_SCHEMA["id"]).geturl(): cls
    for cls in _DIALECT_NAMES
}
_TOO_DEEP_MESSAGE = (
    "instance is nested too deeply to validate: Python's recursion limit was reached"
)


class SchemaLoadError(GatewayError):
    """Raise when a schema file, or a file that it references, cannot be loaded.

    ``path`` is the file that failed, relative to the config root when it is
    inside it. ``ref`` is the ``$ref`` value that failed, if any.
    """

    def __init__(self, message: str, *, path: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.ref = ref


@dataclass(frozen=True, eq=False)
class CompiledSchema:
    """A loaded schema and its compiled validator, safe to share between requests.

    ``schema`` is the root file as parsed, before any reference was rewritten.
    Callers must not mutate it.
    """

    path: str
    dialect: str
    schema: dict[str, Any] | bool = field(repr=False)
    _validator: Validator = field(repr=False)

    def errors(self, instance: Any) -> list[dict[str, str]]:
        """Validate ``instance`` and return its first errors, sorted by pointer.

        Returns ``[]`` for a valid instance. Otherwise returns at most
        `MAX_ERRORS` entries ``{"pointer": ..., "message": ...}``, where the
        pointer is an RFC 6901 JSON pointer into the instance (``""`` for the
        root) and the message is at most `MAX_MESSAGE_CHARS` characters.
        """
        try:
            if self._validator.is_valid(instance):
                return []
            found = heapq.nsmallest(
                MAX_ERRORS, map(_describe_error, self._validator.iter_errors(instance))
            )
        except RecursionError:
            # NOTE: jsonschema uses several Python frames per level of the
            # instance. A schema that refers to itself once per level handled
            # about 245 levels of nested lists (Python 3.11, recursion limit
            # 1000). Deeper instances get this error instead of a result.
            return [{"pointer": "", "message": _TOO_DEEP_MESSAGE}]

        return [{"pointer": pointer, "message": message} for pointer, message in found]


class SchemaRegistry:
    """Load schema files under a config root and cache their compiled form.

    Files are read when `load` is called. A schema file edited on disk after
    its first load is not reread, so create a new registry to reload.
    """

    def __init__(self, base_dir: Path) -> None:
        self._base_dir = Path(base_dir).resolve()
        self._compiled: dict[Path, CompiledSchema] = {}
        self._documents: dict[Path, _Document] = {}

    @property
    def base_dir(self) -> Path:
        """The config root, the folder that contains ``config/`` and ``schemas/``."""
        return self._base_dir

    def load(self, path: str) -> CompiledSchema:
        """Load, check and compile the schema at ``path``, or return the cached one.

        ``path`` is relative to the config root or absolute, and must name a file
        inside the config root. Results are cached by resolved path, so the
        returned `CompiledSchema.path` is the spelling of the first call.

        Raises `SchemaLoadError` when this file or any file that it references
        is missing, is not UTF-8 JSON, has an unsupported ``$schema``, is not a
        valid schema for its dialect, or when any ``$ref`` cannot be resolved.
        """
        root_path = self._resolve_root(path)
        compiled = self._compiled.get(root_path)
        if compiled is None:
            compiled = _SchemaCompiler(self, root_path).compile(str(path))
            self._compiled[root_path] = compiled

        return compiled

    def _display_path(self, path: Path) -> str:
        if path.is_relative_to(self._base_dir):
            return path.relative_to(self._base_dir).as_posix()
        return str(path)

    def _read_document(self, path: Path) -> _Document:
        document = self._documents.get(path)
        if document is None:
            document = _parse_document(path, self._display_path(path))
            self._documents[path] = document
        return document

    def _resolve_root(self, path: str) -> Path:
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self._base_dir / candidate
        resolved = candidate.resolve()

        if not resolved.is_relative_to(self._base_dir):
            raise SchemaLoadError(
                f"schema file '{path}' resolves to {resolved}, outside the config "
                f"root {self._base_dir}; move the schema under the config root",
                path=str(path),
            )
        if not resolved.is_file():
            state = "is a directory" if resolved.is_dir() else "not found"
            raise SchemaLoadError(
                f"schema file '{path}' {state} (looked at {resolved}); create the "
                "file or correct the schema path",
                path=str(path),
            )

        return resolved


@dataclass(frozen=True)
class _Document:
    """One parsed schema file that passed its dialect's meta-schema check."""

    contents: Any
    validator_class: type[Validator]
    dialect: str
    specification: Specification[Any]

    @property
    def ref_keywords(self) -> tuple[str, ...]:
        if self.validator_class is Draft202012Validator:
            return ("$ref", "$dynamicRef")
        return ("$ref",)


@dataclass(frozen=True)
class _SchemaFile:
    """A schema file loaded for one root schema, with its rewritten copy."""

    path: Path
    uri: str
    display: str
    document: _Document
    contents: Any

    @property
    def resource(self) -> Resource[Any]:
        return self.document.specification.create_resource(self.contents)


@dataclass(frozen=True)
class _PendingRef:
    """A reference found in a loaded file, to be checked against the registry."""

    file: _SchemaFile
    node: dict[str, Any]
    keyword: str
    original: str
    ref: str
    base_uri: str
    tried: tuple[Path, ...]


class _SchemaCompiler:
    """Load one root schema and the files that it reaches, then compile it.

    Work alternates between two steps until nothing is left: walking the
    subschemas of loaded files (which rewrites file references and loads the
    files they name) and looking each recorded reference up in a registry of
    everything loaded so far. A lookup that lands outside the walked
    subschemas (for example in ``$defs`` of a Draft 7 file) queues that
    target for a walk, because the validator will use it as a schema.
    """

    def __init__(self, registry: SchemaRegistry, root_path: Path) -> None:
        self._registry = registry
        self._root_path = root_path
        self._search_dirs = _search_dirs(root_path, registry.base_dir)
        self._files: dict[Path, _SchemaFile] = {}
        self._owners: dict[str, tuple[_SchemaFile, Any]] = {}
        self._base_uris: dict[int, str] = {}
        self._walks: list[tuple[_SchemaFile, Resource[Any], str]] = []
        self._pending: list[_PendingRef] = []
        self._targets_seen: set[int] = set()

    def compile(self, given_path: str) -> CompiledSchema:
        root = self._add_file(self._root_path, is_root=True)
        self._resolve_all()
        validator_class = root.document.validator_class
        validator = validator_class(
            root.contents,
            registry=self._build_registry(),
            format_checker=_format_checker(validator_class),
        )

        return CompiledSchema(
            path=given_path,
            dialect=root.document.dialect,
            schema=root.document.contents,
            _validator=validator,
        )

    def _add_file(self, path: Path, *, is_root: bool = False) -> _SchemaFile:
        document = self._registry._read_document(path)
        contents = copy.deepcopy(document.contents)
        # jsonschema picks the validator class from the "$schema" of each schema
        # that it enters through a $ref, and otherwise keeps the referrer's class.
        # Stating the dialect in every file makes a file without "$schema" Draft 7
        # even when a 2020-12 schema refers to it.
        if isinstance(contents, dict):
            contents.setdefault("$schema", document.dialect)

        file = _SchemaFile(
            path, path.as_uri(), self._registry._display_path(path), document, contents
        )
        self._files[path] = file
        resource = file.resource
        # The validator resolves the root schema's own "#..." references against
        # its "$id" (or ""), and any other file's against the URI it was found at.
        base_uri = (resource.id() or "") if is_root else file.uri
        self._owners[file.uri] = (file, contents)
        self._owners[base_uri] = (file, contents)
        self._walks.append((file, resource, base_uri))

        return file

    def _resolve_all(self) -> None:
        registry: Registry[Any] | None = None
        registered = 0
        while True:
            self._walk_queued()
            if not self._pending:
                return
            if registry is None or registered != len(self._files):
                registry = META_SCHEMA_REGISTRY.combine(self._build_registry())
                registered = len(self._files)

            pending, self._pending = self._pending, []
            for item in pending:
                self._check_ref(registry, item)

    def _build_registry(self) -> Registry[Any]:
        resources = [(file.uri, file.resource) for file in self._files.values()]
        root = self._files[self._root_path].resource
        resources.append((root.id() or "", root))
        return Registry().with_resources(resources).crawl()

    def _walk_queued(self) -> None:
        while self._walks:
            file, resource, base_uri = self._walks.pop()
            node = resource.contents
            if not isinstance(node, dict) or id(node) in self._base_uris:
                continue

            self._base_uris[id(node)] = base_uri
            self._record_refs(file, node, base_uri)
            for subresource in resource.subresources():
                self._walks.append(self._enter(file, subresource, base_uri))

    def _enter(
        self, file: _SchemaFile, subresource: Resource[Any], base_uri: str
    ) -> tuple[_SchemaFile, Resource[Any], str]:
        subresource_id = subresource.id()
        if subresource_id is None:
            return file, subresource, base_uri

        # The same join that referencing.Resolver.in_subresource performs.
        sub_base_uri = urljoin(base_uri, subresource_id)
        self._owners[urldefrag(sub_base_uri).url] = (file, subresource.contents)
        return file, subresource, sub_base_uri

    def _record_refs(self, file: _SchemaFile, node: dict[str, Any], base: str) -> None:
        for keyword in file.document.ref_keywords:
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue

            rewritten, tried = self._rewrite_file_ref(file, node, keyword, ref)
            node[keyword] = rewritten
            self._pending.append(
                _PendingRef(file, node, keyword, ref, rewritten, base, tried)
            )

    def _rewrite_file_ref(
        self, file: _SchemaFile, node: dict[str, Any], keyword: str, ref: str
    ) -> tuple[str, tuple[Path, ...]]:
        """Return ``ref`` pointing at the file it names, or unchanged if no file.

        The second value lists the paths tried when a file reference found no
        file. References without a path part, or with a scheme other than
        ``file:``, are left to the registry lookup.
        """
        target, fragment = urldefrag(ref)
        if not target or urlsplit(target).scheme not in ("", "file"):
            return ref, ()

        first = _path_from_uri(urljoin(file.uri, target))
        if not first.is_relative_to(self._registry.base_dir):
            reason = (
                f"resolves to {first}, outside the config root "
                f"{self._registry.base_dir}; keep referenced schemas under it"
            )
            raise _ref_error(file, node, keyword, ref, reason)

        candidates = [first, *self._search_path_candidates(target, first)]
        for candidate in candidates:
            if candidate.is_file():
                found = self._files.get(candidate) or self._add_file(candidate)
                return found.uri + (f"#{fragment}" if fragment else ""), ()

        return ref, tuple(candidates)

    def _search_path_candidates(self, target: str, first: Path) -> list[Path]:
        """Return the fallback paths for a relative file reference, nearest first."""
        if urlsplit(target).scheme or target.startswith("/"):
            return []

        candidates: list[Path] = []
        for directory in self._search_dirs:
            candidate = _path_from_uri(urljoin(directory.as_uri() + "/", target))
            if not candidate.is_relative_to(self._registry.base_dir):
                continue
            if candidate != first and candidate not in candidates:
                candidates.append(candidate)

        return candidates

    def _check_ref(self, registry: Registry[Any], item: _PendingRef) -> None:
        try:
            resolved = registry.resolver(base_uri=item.base_uri).lookup(item.ref)
        except Unresolvable as error:
            raise self._unresolved_error(item, error) from None
        except (ValueError, TypeError):
            # referencing 0.37 raises these for a JSON pointer that indexes a
            # list with a non-number or steps into a number, string or null.
            raise self._unresolved_error(item, None) from None

        target = resolved.contents
        if not isinstance(target, (dict, bool)):
            reason = (
                f"points to a JSON {_json_type_name(target)}, not to a schema; "
                "point it at an object or a boolean"
            )
            raise _ref_error(item.file, item.node, item.keyword, item.original, reason)
        if isinstance(target, dict) and id(target) not in self._targets_seen:
            self._targets_seen.add(id(target))
            self._prepare_target(item, target)

    def _prepare_target(self, item: _PendingRef, target: dict[str, Any]) -> None:
        """Make a reference target in a loaded file safe for the validator.

        Targets outside the walked subschemas were not covered by the file's
        meta-schema check, so they are checked and walked here. Every target
        also gets its file's "$schema" (see `_add_file`).
        """
        uri, fragment = _split_ref(item.base_uri, item.ref)
        owner = self._owners.get(uri)
        if owner is None:
            return  # a bundled meta-schema

        file, resource_root = owner
        if id(target) not in self._base_uris:
            location = _locate(file.contents, target)
            _check_schema(file.document.validator_class, file.display, target, location)
            base_uri = self._base_uris.get(id(resource_root), uri)
            for node in _nodes_on_pointer(resource_root, fragment):
                base_uri = self._base_uris.get(id(node), base_uri)
            resource = file.document.specification.create_resource(target)
            self._walks.append((file, resource, base_uri))

        target.setdefault("$schema", file.document.dialect)

    def _unresolved_error(
        self, item: _PendingRef, error: Unresolvable | None
    ) -> SchemaLoadError:
        reason = "could not be resolved: " + self._unresolved_reason(item, error)
        return _ref_error(item.file, item.node, item.keyword, item.original, reason)

    def _unresolved_reason(self, item: _PendingRef, error: Unresolvable | None) -> str:
        if error is None or isinstance(error, PointerToNowhere):
            fragment = _split_ref(item.base_uri, item.ref)[1]
            return (
                f"JSON pointer '{fragment}' does not exist in the target schema; "
                "correct the fragment after '#'"
            )
        if isinstance(error, NoSuchAnchor):
            return (
                f"anchor '{error.anchor}' does not exist in the target schema; "
                "correct the fragment after '#'"
            )
        if item.tried:
            tried = ", ".join(self._registry._display_path(path) for path in item.tried)
            return f"no file at {tried}; create the file or correct the {item.keyword}"

        uri, _ = _split_ref(item.base_uri, item.ref)
        if urlsplit(uri).scheme in ("http", "https"):
            return (
                f"no loaded schema has the URI '{uri}', and schemas are never "
                "fetched over the network; save that schema under the config root "
                "and refer to it by a relative path"
            )
        return f"no loaded schema has the URI '{uri}'; correct the {item.keyword}"


def _parse_document(path: Path, display: str) -> _Document:
    """Parse one schema file and check it against its dialect's meta-schema."""
    contents = _parse_json(path, display)
    validator_class = _validator_class(contents, display)
    dialect = DEFAULT_DIALECT
    if isinstance(contents, dict) and "$schema" in contents:
        dialect = contents["$schema"]

    _check_schema(validator_class, display, contents, location="")

    return _Document(contents, validator_class, dialect, specification_with(dialect))


def _parse_json(path: Path, display: str) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SchemaLoadError(
            f"schema file '{display}' could not be read: {error.strerror}; check "
            "that it exists and is readable",
            path=display,
        ) from None

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SchemaLoadError(
            f"schema file '{display}' is not valid UTF-8 (invalid byte at offset "
            f"{error.start}); save it as UTF-8",
            path=display,
        ) from None

    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        reason = f"{error.msg} at line {error.lineno} column {error.colno}"
    except ValueError as error:
        reason = str(error)
    except RecursionError:
        reason = "arrays and objects are nested too deeply to parse"
    raise SchemaLoadError(
        f"schema file '{display}' is not valid JSON: {reason}; fix the JSON syntax",
        path=display,
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


# Providers send date-time values such as "2018-04-25 20:42:10" (GitHub's
# check_run.app.created_at), so date and time formats stay annotations; the
# other formats are checked, which a oneOf between "uri" and "" relies on.
_LENIENT_FORMATS = frozenset({"date-time", "date", "time", "duration"})


def _format_checker(validator_class: type[Validator]) -> FormatChecker:
    checked = [
        f for f in validator_class.FORMAT_CHECKER.checkers if f not in _LENIENT_FORMATS
    ]
    return FormatChecker(formats=checked)


def _validator_class(contents: Any, display: str) -> type[Validator]:
    """Return the validator class for a file's ``$schema``, Draft 7 if absent."""
    if not isinstance(contents, dict) or "$schema" not in contents:
        return Draft7Validator

    dialect = contents["$schema"]
    if isinstance(dialect, str):
        validator_class: type[Validator] = validator_for(
            contents, default=Draft7Validator
        )
        # validator_for returns the default for an unknown URI and also maps
        # the Draft 3 URI, so the URI must name one of the supported dialects.
        if _DIALECTS_BY_URI.get(urlsplit(dialect).geturl()) is validator_class:
            return validator_class

    supported = ", ".join(_DIALECT_NAMES.values())
    raise SchemaLoadError(
        f"schema file '{display}' has $schema {dialect!r}, which is not a supported "
        f"dialect ({supported}); use that dialect's meta-schema URI, for example "
        f"'{DEFAULT_DIALECT}', or remove $schema to use Draft 7",
        path=display,
    )


def _check_schema(
    validator_class: type[Validator], display: str, schema: Any, location: str
) -> None:
    """Check ``schema``, found at ``location`` in file ``display``, for its dialect."""
    try:
        validator_class.check_schema(schema)
    except SchemaError as error:
        where = location + _json_pointer(error.absolute_path)
        at = f"at '{where}'" if where else "at the root"
        raise SchemaLoadError(
            f"schema file '{display}' is not a valid "
            f"{_DIALECT_NAMES[validator_class]} schema {at}: "
            f"{_truncate(error.message)}; fix the schema at that location",
            path=display,
        ) from None


def _search_dirs(root_path: Path, base_dir: Path) -> tuple[Path, ...]:
    """Return the fallback directories for file references, nearest first."""
    directories: list[Path] = []
    for directory in root_path.parents:
        if not directory.is_relative_to(base_dir):
            break
        directories.append(directory)
        if directory.name == "schemas" or directory == base_dir:
            break

    return tuple(directories)


def _path_from_uri(uri: str) -> Path:
    return Path(url2pathname(urlsplit(uri).path)).resolve()


def _split_ref(base_uri: str, ref: str) -> tuple[str, str]:
    """Split a reference the way ``referencing.Resolver.lookup`` does."""
    if ref.startswith("#"):
        return base_uri, ref[1:]
    uri, fragment = urldefrag(urljoin(base_uri, ref))
    return uri, fragment


def _nodes_on_pointer(document: Any, fragment: str) -> Iterator[Any]:
    """Yield each node on a JSON pointer fragment that is known to resolve."""
    if not fragment.startswith("/"):
        return

    node = document
    for segment in unquote(fragment[1:]).split("/"):
        if isinstance(node, list):
            node = node[int(segment)]
        else:
            node = node[segment.replace("~1", "/").replace("~0", "~")]
        yield node


def _locate(document: Any, target: Any) -> str:
    """Return the JSON pointer of ``target`` (found by identity) in ``document``."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        node, pointer = stack.pop()
        if node is target:
            return pointer
        stack.extend(
            (child, f"{pointer}/{_escape(str(key))}") for key, child in _children(node)
        )

    return ""


def _children(node: Any) -> Iterable[tuple[object, Any]]:
    if isinstance(node, dict):
        return node.items()
    if isinstance(node, list):
        return enumerate(node)
    return ()


def _ref_error(
    file: _SchemaFile, node: dict[str, Any], keyword: str, ref: str, reason: str
) -> SchemaLoadError:
    location = f"{_locate(file.contents, node)}/{_escape(keyword)}"
    return SchemaLoadError(
        f"{keyword} '{ref}' in '{file.display}' at '{location}' {reason}",
        path=file.display,
        ref=ref,
    )


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "array"


def _describe_error(error: ValidationError) -> tuple[str, str]:
    return _json_pointer(error.absolute_path), _truncate(error.message)


def _json_pointer(path: Iterable[str | int]) -> str:
    return "".join(f"/{_escape(str(part))}" for part in path)


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _truncate(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 3] + "..."
