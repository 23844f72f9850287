"""Offline validation of a VirtualService against Istio's own CRD schema.

The schema is package data generated from the `istio.io/api` release pinned in
hack/istio/go.mod (`python -m virtualservice_operator_dev.istio`; a test keeps the two
equal). It is a Kubernetes structural schema (OpenAPI v3), checked here with
`jsonschema` after a translation of the extensions that change what is accepted:
- fields a schema does not declare are pruned by the API server (silently lost): here
  they are violations ("unknown field"), unless `x-kubernetes-preserve-unknown-fields`;
- `nullable` admits null; `x-kubernetes-int-or-string` admits an integer or a string;
- `x-kubernetes-validations` (CEL) rules: the duration rule Istio uses is checked; any
  other rule is left to the API server (`check-config --server`);
- `apiVersion`, `kind` and `metadata` are the API server's, not the CRD's (the template
  checks in template.py cover what the operator needs of them).
Every violation is reported, each with its field path, what is wrong and the fix.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jsonschema import Draft4Validator, ValidationError, validators

SCHEMA_FILE = "schemas/virtualservices.networking.istio.io.json"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_EXPECTED = {
    "array": "a list",
    "object": "a mapping",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
_TYPE_FIX = {
    "array": "write it as a list: one '- item' per line, or [a, b]",
    "object": "write indented 'key: value' lines under it",
    "string": "put the value in quotes",
    "integer": "write a whole number without quotes",
    "number": "write a number without quotes",
    "boolean": "write true or false without quotes",
}
# Go's time.ParseDuration, which CEL's duration() uses: e.g. 5s, 1.5m, 1h30m, 0.
_DURATION = re.compile(r"[-+]?(?:0|(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)")
_UNIT_SECONDS = {
    **{"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3},
    **{"s": 1.0, "m": 60.0, "h": 3600.0},
}


@dataclass(frozen=True)
class Violation:
    path: str
    message: str
    fix: str
    at: tuple[str | int, ...] = ()  # the path as keys and indexes, to find its line

    def __str__(self) -> str:
        return f"{self.path}: {self.message}. Fix: {self.fix}."


@dataclass(frozen=True)
class Schema:
    source: str
    served: tuple[str, ...]
    storage: str
    validator: Draft4Validator


@functools.cache
def istio_schema() -> Schema:
    """The packaged VirtualService schema, translated and compiled once."""
    text = resources.files("virtualservice_operator.domain").joinpath(SCHEMA_FILE).read_text()
    document = json.loads(text)
    root = _translate(document["openAPIV3Schema"])
    # The API server owns these three; the CRD's schema does not list them.
    root["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **root.get("properties", {}),
    }
    return Schema(
        source=document["source"],
        served=tuple(document["served"]),
        storage=document["storage"],
        validator=_Validator(root),
    )


def validate_virtual_service(manifest: Mapping[str, Any]) -> list[Violation]:
    """Every way `manifest` breaks Istio's VirtualService schema, in document order."""
    found: dict[Violation, None] = {}  # ordered set: one violation can be reached twice
    errors = sorted(istio_schema().validator.iter_errors(manifest), key=_order)
    for error in errors:
        for violation in _violations(error):
            found.setdefault(violation)
    return list(found)


# -- translation of the structural schema ------------------------------------------------


def _translate(node: Any) -> Any:
    """A JSON Schema (draft 4) equivalent of one structural-schema node."""
    if isinstance(node, list):
        return [_translate(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _translate(v) for k, v in node.items() if k != "properties"}
    if "properties" in node:  # a map of field names, not a schema: a field may be "type"
        out["properties"] = {k: _translate(v) for k, v in node["properties"].items()}
    if out.pop("x-kubernetes-int-or-string", False) and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False  # the API server would prune the rest
    return out


def _is_duration_at_least_1ms(value: Any) -> bool:
    if not isinstance(value, str) or not _DURATION.fullmatch(value):
        return False
    seconds = 0.0
    for number, unit in re.findall(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", value):
        seconds += float(number) * _UNIT_SECONDS[unit]
    return (-seconds if value.startswith("-") else seconds) >= 1e-3


# CEL rules found in Istio's schema that can be checked without a CEL engine.
_CEL_RULES: dict[str, Callable[[Any], bool]] = {
    "duration(self) >= duration('1ms')": _is_duration_at_least_1ms,
}


def _cel_rules(
    validator: Any, rules: Sequence[Mapping[str, str]], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    for rule in rules:
        check = _CEL_RULES.get(rule.get("rule", ""))
        if check is not None and not check(instance):
            yield ValidationError(rule.get("message") or f"fails rule {rule['rule']}")


_Validator = validators.extend(  # type: ignore[no-untyped-call]  # untyped in the stubs
    Draft4Validator, {"x-kubernetes-validations": _cel_rules}
)


# -- errors into violations --------------------------------------------------------------


def _order(error: ValidationError) -> tuple[str, ...]:
    return tuple(f"{p:08d}" if isinstance(p, int) else str(p) for p in error.absolute_path)


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(the document)"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean {'true' if value else 'false'}"
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string {json.dumps(shown)}"
    if isinstance(value, int):
        return f"an integer {value}"
    if isinstance(value, float):
        return f"a number {value}"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def _expected(types: Any) -> str:
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_EXPECTED.get(t, t) for t in names)


def _v(at: Sequence[Any], message: str, fix: str) -> Violation:
    return Violation(_path(at), message, fix, tuple(at))


def _violations(error: ValidationError) -> list[Violation]:
    at = list(error.absolute_path)
    # The stubs allow "unset" for errors made outside a validator; none are here.
    kind, instance = error.validator, error.instance
    value: Any = error.validator_value
    schema: Any = error.schema
    if kind == "type":
        first = value if isinstance(value, str) else value[0]
        message = f"expected {_expected(value)}, got {_describe(instance)}"
        return [_v(at, message, _TYPE_FIX.get(first, "fix its type"))]
    if kind == "additionalProperties" and isinstance(instance, dict):
        known = sorted(schema.get("properties", {}))
        return [_unknown(at, key, known) for key in instance if key not in known]
    if kind == "required" and isinstance(instance, dict):
        return [
            _v([*at, name], "is required", f"add {name}") for name in value if name not in instance
        ]
    if kind == "oneOf":
        return [_one_of(at, value, instance)]
    if kind == "anyOf":
        forms = [_expected(b["type"]) for b in value if "type" in b and len(b) == 1]
        if len(forms) == len(value):
            message = f"expected {' or '.join(forms)}, got {_describe(instance)}"
            return [_v(at, message, "use one of those types")]
    if kind == "enum":
        allowed = ", ".join(json.dumps(v) for v in value)
        return [_v(at, f"is {json.dumps(instance)}", f"use one of {allowed}")]
    if kind in ("minimum", "maximum"):
        bound = "at least" if kind == "minimum" else "at most"
        return [_v(at, f"is {instance}", f"use a value {bound} {value}")]
    if kind == "x-kubernetes-validations":
        return [_v(at, f"{error.message}, got {_describe(instance)}", "e.g. 5s")]
    return [_v(at, error.message, "see Istio's VirtualService reference")]


def _unknown(at: list[Any], key: str, known: list[str]) -> Violation:
    near = difflib.get_close_matches(key, known, n=1)
    fix = f"rename it to {near[0]}" if near else "remove it"
    fields = ", ".join(known) if known else "none"
    return _v(
        [*at, key],
        "unknown field, which the API server would drop",
        f"{fix} (known fields here: {fields})",
    )


def _one_of(at: list[Any], branches: Sequence[Any], instance: Any) -> Violation:
    # Istio's way of saying "at most one of these fields" (a protobuf oneof): a branch
    # that forbids all of them, then one branch requiring each.
    names = [b["required"][0] for b in branches if list(b) == ["required"]]
    exclusive = any(list(b) == ["not"] for b in branches)
    if names and isinstance(instance, dict):
        present = [n for n in names if n in instance]
        quantity = "at most one" if exclusive else "exactly one"
        message = f"sets {', '.join(present) or 'none'}; {quantity} of {', '.join(names)} allowed"
        return _v(at, message, f"keep {quantity} of {', '.join(names)}")
    return _v(at, "matches none or several of the allowed forms", "keep one")
