"""Rendering the configured VirtualService template for one Service name.

`${serviceName}` and `${defaultNamespace}` are the only variables; `$$` writes a literal
dollar, a `$` followed by anything else is kept as is. The values never reach the YAML
parser: each variable is replaced by an inert alphanumeric token, the YAML is parsed
once (and cached), and the tokens are then replaced inside the parsed strings. So a
value cannot change the document's structure nor the type of a scalar (a Service named
`true` or a namespace named `123` stays a string), and a template that renders for one
name renders the same way for every name. The values are also checked to be DNS labels.

The rendered manifest is then checked for what the operator relies on (kind, name,
namespace, spec shape); every other field passes through untouched.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import msgspec
import yaml

from virtualservice_operator.domain.constants import (
    ISTIO_GROUP,
    ISTIO_VERSIONS,
    virtual_service_name,
)
from virtualservice_operator.domain.model import is_dns_label

VARIABLES = ("serviceName", "defaultNamespace")
API_VERSIONS = tuple(f"{ISTIO_GROUP}/{v}" for v in ISTIO_VERSIONS)

# Inert stand-ins: plain alphanumeric scalars in every YAML context, unlikely in text.
_TOKENS = {name: f"VSOTMPLVAR{i}X7Q" for i, name in enumerate(VARIABLES)}
_TOKEN_RE = re.compile("|".join(_TOKENS.values()))
_DOLLAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}\n]*)(?P<close>\})?|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
# Bounds the walk over the parsed document: YAML aliases can make a tiny text expand
# exponentially ("billion laughs") or refer to themselves.
_MAX_NODES = 20_000
_MAX_DEPTH = 64


class TemplateError(ValueError):
    """The template cannot produce a valid VirtualService: what is wrong and the fix."""

    def __init__(self, message: str, *, field: str = "", fix: str = "") -> None:
        self.field = field
        self.message = message
        self.fix = fix
        text = f"{field}: {message}" if field else message
        super().__init__(f"{text}. Fix: {fix}" if fix else text)


def render_virtual_service(
    template: str, *, service: str, default_namespace: str
) -> dict[str, Any]:
    """The VirtualService manifest for `service`, with metadata.namespace set."""
    if not is_dns_label(service):
        raise TemplateError(
            f"service name {service!r} is not a DNS label",
            field="serviceName",
            fix="Service names are lower-case letters, digits and '-' (max 63)",
        )
    if not is_dns_label(default_namespace):
        raise TemplateError(
            f"namespace {default_namespace!r} is not a DNS label",
            field="defaultNamespace",
            fix="namespaces are lower-case letters, digits and '-' (max 63)",
        )
    if not isinstance(template, str):
        raise TemplateError("the template must be text", fix="write it as a YAML block (|)")
    values = {_TOKENS["serviceName"]: service, _TOKENS["defaultNamespace"]: default_namespace}
    text = _as_json(template)
    if text is not None:
        for token, value in values.items():
            text = text.replace(token, value)
        manifest = _decode(text)
    else:
        manifest = _substitute(_parse(template), values, "", [0])
    _check(manifest, service=service, default_namespace=default_namespace)
    assert isinstance(manifest, dict)  # _check guarantees it; narrows the type
    manifest["metadata"]["namespace"] = default_namespace
    return manifest


@functools.lru_cache(maxsize=16)
def _parse(template: str) -> Any:
    """Template text -> parsed YAML with tokens in place of variables (never mutated)."""
    text = _DOLLAR.sub(_replace_dollar, template)
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at template line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise TemplateError(
            f"not valid YAML{where}: {problem}", fix="check indentation and quoting"
        ) from e
    except (ValueError, TypeError, RecursionError, OverflowError) as e:
        # PyYAML raises these for e.g. an impossible date or absurd nesting.
        raise TemplateError(f"not valid YAML: {e}", fix="quote odd-looking values") from e
    if len(documents) != 1:
        raise TemplateError(
            f"must hold exactly one YAML document, found {len(documents)}",
            fix="keep a single VirtualService and no '---' separators",
        )
    return documents[0]


_decode = msgspec.json.decode


@functools.lru_cache(maxsize=16)
def _as_json(template: str) -> str | None:
    """The parsed template as JSON text with the tokens in place: rendering is then two
    text replacements and one decode, a fifth of the walk's time (the operator renders
    for every reconcile, `status` for every name). The values are DNS labels, which a
    JSON string carries as they are, and the tokens are upper-case, which no value is,
    so a replacement never makes or breaks another token.

    None when only the walk (`_substitute`) can render the template or say what is
    wrong with it: anything it refuses, and a key holding a variable (two keys could
    become one, which the walk reports)."""
    try:
        walked = _substitute(_parse(template), {t: t for t in _TOKENS.values()}, "", [0])
        text = msgspec.json.encode(walked).decode()
    except (TemplateError, TypeError, ValueError, OverflowError, RecursionError):
        return None
    return None if _token_in_a_key(walked) else text


def _token_in_a_key(node: Any) -> bool:
    if isinstance(node, list):
        return any(_token_in_a_key(v) for v in node)
    if isinstance(node, dict):
        return any(_TOKEN_RE.search(k) is not None or _token_in_a_key(v) for k, v in node.items())
    return False


def compose(template: str) -> yaml.Node | None:
    """The template's YAML node tree (for line numbers), or None if it does not parse."""
    try:
        return yaml.compose(_DOLLAR.sub(_replace_dollar, template))
    except (TemplateError, yaml.YAMLError, ValueError, RecursionError):
        return None


def _replace_dollar(match: re.Match[str]) -> str:
    if match.group("escaped"):
        return "$"
    line = match.string.count("\n", 0, match.start()) + 1
    known = ", ".join(f"${{{v}}}" for v in VARIABLES)
    if match.group("bare") is not None:
        name = match.group("bare")
        raise TemplateError(
            f"bare variable ${name} at template line {line}",
            fix=f"write ${{{name}}} (known: {known}) or $$ for a literal dollar",
        )
    name = match.group("braced")
    if match.group("close") is None:
        raise TemplateError(
            f"unterminated '${{{name}' at template line {line}", fix="close it with '}'"
        )
    if name not in VARIABLES:
        raise TemplateError(
            f"unknown variable ${{{name}}} at template line {line}",
            fix=f"use one of {known}, or $$ for a literal dollar",
        )
    return _TOKENS[name]


def _substitute(
    node: Any, values: dict[str, str], path: str, budget: list[int], depth: int = 0
) -> Any:
    """A fresh JSON-compatible copy of `node` with tokens replaced by their values."""
    budget[0] += 1
    if budget[0] > _MAX_NODES or depth > _MAX_DEPTH:
        raise TemplateError(
            f"the template expands to more than {_MAX_NODES} values or {_MAX_DEPTH} levels",
            fix="remove YAML aliases (*name) that repeat or refer to themselves",
        )
    if isinstance(node, str):
        return _TOKEN_RE.sub(lambda m: values[m.group(0)], node)
    if isinstance(node, bool) or node is None or isinstance(node, int):
        return node
    if isinstance(node, float):
        if not math.isfinite(node):
            raise TemplateError(
                f"{path or 'value'} is {node}, which JSON cannot carry", fix="quote it"
            )
        return node
    if isinstance(node, list):
        return [
            _substitute(v, values, f"{path}[{i}]", budget, depth + 1) for i, v in enumerate(node)
        ]
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise TemplateError(
                    f"key {key!r} under {path or 'the top level'} is not a string",
                    fix="quote the key",
                )
            new_key = _TOKEN_RE.sub(lambda m: values[m.group(0)], key)
            child = f"{path}.{new_key}" if path else new_key
            if new_key in out:
                raise TemplateError(f"{child} is defined twice", fix="keep one of them")
            out[new_key] = _substitute(value, values, child, budget, depth + 1)
        return out
    raise TemplateError(
        f"{path or 'value'} is a YAML {type(node).__name__}, not JSON-compatible",
        fix="quote it so that it is a string",
    )


def _check(manifest: Any, *, service: str, default_namespace: str) -> None:
    """Refuse anything the operator could not own safely; each error says the fix."""
    if not isinstance(manifest, dict):
        raise TemplateError(
            f"must be a YAML mapping (a VirtualService), got {type(manifest).__name__}",
            fix="start the template with 'apiVersion: networking.istio.io/v1'",
        )
    if manifest.get("apiVersion") not in API_VERSIONS:
        raise TemplateError(
            f"is {manifest.get('apiVersion')!r}",
            field="apiVersion",
            fix=f"use one of {', '.join(API_VERSIONS)}",
        )
    if manifest.get("kind") != "VirtualService":
        raise TemplateError(
            f"is {manifest.get('kind')!r}", field="kind", fix="write 'kind: VirtualService'"
        )
    meta = manifest.get("metadata")
    if not isinstance(meta, dict):
        raise TemplateError("is missing or not a mapping", field="metadata", fix="add metadata")
    expected = virtual_service_name(service)
    if meta.get("name") != expected:
        raise TemplateError(
            f"is {meta.get('name')!r} but must be {expected!r} for Service {service!r}",
            field="metadata.name",
            fix='write name: "${serviceName}-virtual-service"',
        )
    if meta.get("namespace") not in (None, default_namespace):
        raise TemplateError(
            f"is {meta.get('namespace')!r} but the VirtualService lives in {default_namespace!r}",
            field="metadata.namespace",
            fix='write namespace: "${defaultNamespace}" or leave it out',
        )
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            raise TemplateError(
                "must map names to string values",
                field=f"metadata.{key}",
                fix='quote values that look like numbers or booleans ("true", "1")',
            )
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        raise TemplateError("is missing or not a mapping", field="spec", fix="add a spec")
    http = spec.get("http")
    if http is not None and not (isinstance(http, list) and all(isinstance(r, dict) for r in http)):
        raise TemplateError(
            "must be a list of routes (mappings)",
            field="spec.http",
            fix="write each route as '- route: [...]'",
        )
