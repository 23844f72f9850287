"""The operator configuration: the `config.yaml` key of the operator's ConfigMap.

Parsing never lets anything but `ConfigError` escape, whatever the text: a reload of a
broken ConfigMap must be reported (every problem, with its line and its fix) and the
previous configuration kept, never crash the operator. Types are strict (a quoted
"true" is not a boolean, an unquoted 123 is not a namespace). Unknown keys are warnings,
not errors, so that a newer ConfigMap still loads into an older operator.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
)
from pydantic import model_validator as _model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from virtualservice_operator.domain.constants import (
    CONFIG_KEY,
    DEFAULT_ROUTING_HEADER,
    EXCLUDE_LABEL,
    INSTANCE_LABEL,
    PLACEHOLDER_LABEL,
    SOURCE_ANNOTATION,
    SYSTEM_NAMESPACES,
)
from virtualservice_operator.domain.instance import DEFAULT_INSTANCE
from virtualservice_operator.domain.model import is_dns_label
from virtualservice_operator.domain.schema import validate_virtual_service
from virtualservice_operator.domain.template import TemplateError, compose, render_virtual_service

# The template of the operations guide, section "2. Configuration Setup".
DEFAULT_TEMPLATE = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: "${serviceName}-virtual-service"
  namespace: "${defaultNamespace}"
  labels:
    managed-by: virtualservice-operator
spec:
  hosts:
  - ${serviceName}
  http:
  - route:
    - destination:
        host: ${serviceName}.${defaultNamespace}.svc.cluster.local
"""
SAMPLE_SERVICE = "sample-service"  # the name the template is test-rendered with at load
_MAX_PROBLEMS = 50  # a pathological document must not produce a megabyte of errors

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token (header names)
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    fix: str
    line: int | None = None

    def __str__(self) -> str:
        return self.format(CONFIG_KEY)

    def format(self, source: str) -> str:
        """`<source> line N: path: what is wrong. Fix: how.`; the line and the path only
        when known, `source` (e.g. config.yaml) left out when empty."""
        where = " ".join(
            part for part in (source, f"line {self.line}" if self.line else "") if part
        )
        subject = f"{self.path}: " if self.path else ""
        head = f"{where}: " if where else ""
        return f"{head}{subject}{_sentence(self.message)} Fix: {_sentence(self.fix)}"


class ConfigError(ValueError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _invalid(message: str, fix: str) -> PydanticCustomError:
    return PydanticCustomError("vso", "{message}", {"message": message, "fix": fix})


def _namespace(value: str) -> str:
    if not is_dns_label(value):
        raise _invalid(
            f"{value!r} is not a valid namespace name",
            "use lower-case letters, digits and '-' (max 63)",
        )
    if value in SYSTEM_NAMESPACES:
        raise _invalid(
            f"{value!r} is a system namespace",
            f"use an application namespace; never {', '.join(sorted(SYSTEM_NAMESPACES))}",
        )
    return value


def _header(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise _invalid(f"{value!r} is not a valid HTTP header name", "use e.g. 'x-developer'")
    return value.lower()  # Istio only matches lower-case header names


def _token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise _invalid(f"{value!r} is not a valid baggage key", "use e.g. 'x-developer'")
    return value


def _label_key(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if not (
        _NAME.fullmatch(name)
        and len(name) <= 63
        and (not prefix or (_SUBDOMAIN.fullmatch(prefix) and len(prefix) <= 253))
    ):
        raise _invalid(
            f"{value!r} is not a valid label or annotation key",
            "use [prefix/]name: name up to 63 letters, digits, '-', '_', '.'",
        )
    return value


def _label_value(value: str) -> str:
    if value and not (_NAME.fullmatch(value) and len(value) <= 63):
        raise _invalid(
            f"{value!r} is not a valid label value",
            "use up to 63 letters, digits, '-', '_', '.' (start and end alphanumeric)",
        )
    return value


Namespace = Annotated[str, Strict(), AfterValidator(_namespace)]
LabelKey = Annotated[str, Strict(), AfterValidator(_label_key)]
LabelValue = Annotated[str, Strict(), AfterValidator(_label_value)]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="ignore",  # unknown keys are reported as warnings by parse_config
    )


class RoutingConfig(_Model):
    """How a request names the developer namespace it wants."""

    header: Annotated[str, Strict(), AfterValidator(_header)] = Field(
        DEFAULT_ROUTING_HEADER,
        description=(
            "The HTTP request header whose value names a developer namespace, in `header` "
            "mode: a request with `x-developer: staging` takes the route to `staging`. "
            "An HTTP header name; stored in lower case, as Istio matches header names."
        ),
        examples=["x-developer"],
    )
    match: Literal["header", "baggage"] = Field(
        "header",
        description=(
            "`header`: developer routes match `routing.header` exactly. `baggage`: they "
            "match the W3C `baggage` header holding the member "
            "`<routing.baggageKey>=<namespace>` (a regular expression: other members and "
            "properties may surround it), for applications that propagate baggage "
            "rather than a header of their own."
        ),
        examples=["header"],
    )
    baggage_key: Annotated[str, Strict(), AfterValidator(_token)] = Field(
        DEFAULT_ROUTING_HEADER,
        description="The baggage member's key, in `baggage` mode.",
        examples=["x-developer"],
    )


class PlaceholderConfig(_Model):
    """Extra metadata put on every placeholder Service."""

    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        description=(
            "Extra labels on every placeholder Service. Not the operator's own: "
            f"`{PLACEHOLDER_LABEL}`, `{EXCLUDE_LABEL}`, `{INSTANCE_LABEL}`."
        ),
        examples=[{"team": "platform"}],
    )
    annotations: dict[LabelKey, Annotated[str, Strict()]] = Field(
        default_factory=dict,
        description=(
            "Extra annotations on every placeholder Service. Not "
            f"`{SOURCE_ANNOTATION}`, which the operator sets to `<defaultNamespace>/<name>`."
        ),
        examples=[{"example.com/owner": "platform-team"}],
    )


_SET_OPERATORS = ("In", "NotIn")


class LabelSelectorRequirement(_Model):
    """One `matchExpressions` item, as in a Kubernetes label selector."""

    key: LabelKey = Field(description="The label key the requirement is about.", examples=["team"])
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn (the value is, or is not, one of `values`), Exists or "
        "DoesNotExist (the label is, or is not, set).",
        examples=["In"],
    )
    values: tuple[LabelValue, ...] = Field(
        default=(),
        description="The values for In and NotIn (at least one); empty for Exists and "
        "DoesNotExist.",
        examples=[["payments", "search"]],
    )

    @_model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in _SET_OPERATORS and not self.values:
            raise _invalid(f"{self.operator} needs values", "list at least one under values")
        if self.operator not in _SET_OPERATORS and self.values:
            raise _invalid(f"{self.operator} takes no values", "remove values")
        return self

    def query(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        return f"{self.key} {self.operator.lower()} ({','.join(self.values)})"


class LabelSelector(_Model):
    """A Kubernetes label selector: every `matchLabels` pair and every `matchExpressions`
    requirement must hold (an empty selector selects everything)."""

    match_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        description="Labels the Service must carry, with these values.",
        examples=[{"virtualservice-operator/enabled": "true"}],
    )
    match_expressions: tuple[LabelSelectorRequirement, ...] = Field(
        default=(),
        description="Requirements on the Service's labels (key, operator, values).",
        examples=[[{"key": "team", "operator": "In", "values": ["payments"]}]],
    )

    def query(self) -> str:
        """The selector as the API's `labelSelector` parameter ("" selects everything)."""
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        return ",".join(parts + [r.query() for r in self.match_expressions])


class OperatorConfig(_Model):
    """The operator's `config.yaml`. Each field's description is the configuration
    reference (docs/configuration-reference.md is generated from it, and a test keeps
    it current): a new field needs a description and an example."""

    default_namespace: Namespace = Field(
        description=(
            "The namespace whose Services each get a VirtualService "
            "`<name>-virtual-service`, written into this same namespace. A namespace "
            "name (lower-case letters, digits and '-', at most 63), not a system namespace."
        ),
        examples=["production"],
    )
    developer_namespaces: tuple[Namespace, ...] = Field(
        (),
        description=(
            "Namespaces where developers run their own builds. A Service in one of them "
            "with the name of a Service in the default namespace gets a route in that "
            "Service's VirtualService, taken by requests that name the namespace (see "
            "`routing`). Routes follow this order and come before the template's own. "
            "Namespace names; not the default namespace, not a system namespace, no repeats."
        ),
        examples=[["staging", "dev-team-a"]],
    )
    enable_placeholder_services: Annotated[bool, Strict()] = Field(
        False,
        description=(
            "`true`: in each developer namespace without a Service of a default-namespace "
            "Service's name, create a placeholder: an ExternalName Service of that name "
            "pointing to `<name>.<defaultNamespace>.svc.cluster.local`, with the default "
            f"Service's ports, labelled `{PLACEHOLDER_LABEL}=true`, so that code in the "
            "developer namespace reaches every Service by its short name. Placeholders "
            "never get routes; a real Service applied over one replaces it."
        ),
        examples=[True],
    )
    virtual_service_template: Annotated[str, Strict()] = Field(
        DEFAULT_TEMPLATE,
        description=(
            "The VirtualService made for each Service, as YAML text with the variables "
            "`${serviceName}` and `${defaultNamespace}` (`$$` is a literal `$`). It must "
            "render a VirtualService of `networking.istio.io` (`v1`, `v1beta1` or "
            "`v1alpha3`) named `${serviceName}-virtual-service` in `${defaultNamespace}`, "
            "valid by Istio's VirtualService schema. The operator adds its labels and "
            "puts the developer routes before the template's `http` routes; every other "
            "field (`gateways`, `exportTo`, timeouts, retries) is kept as written."
        ),
        examples=[DEFAULT_TEMPLATE],
    )
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig,
        description="How a request names the developer namespace it wants.",
    )
    placeholder: PlaceholderConfig = Field(
        default_factory=PlaceholderConfig,
        description="Extra metadata on every placeholder Service.",
    )
    service_selector: LabelSelector | None = Field(
        default=None,
        description="Only Services in the default namespace whose labels match this label "
        "selector (`matchLabels`, `matchExpressions`, as in a Deployment's selector) get a "
        "VirtualService and placeholders; unset, every Service does. A Service that stops "
        "matching loses what the operator made for it, as an excluded one does. Developer "
        "Services need not match: a developer's Service is routed when its name is selected "
        "in the default namespace.",
        examples=[{"matchLabels": {"virtualservice-operator/enabled": "true"}}],
    )
    allow_host_conflicts: Annotated[bool, Strict()] = Field(
        default=False,
        description="By default a VirtualService that is not this instance's (another "
        "instance's, or one without the operator's labels) in the default namespace that "
        "already routes a host of ours for the mesh holds ours back: it is not created, or "
        "not updated, while the other exists (a HostConflict Warning Event; Istio would apply "
        "only one of the two, analysis IST0109). true creates and updates ours anyway, with a "
        "VirtualServiceConflict warning (the behaviour of 1.3.0).",
        examples=[False],
    )
    # Which instance this config drives (instance.py): from the -instance flag or the
    # ConfigMap's location, never from config.yaml (a key there is an unknown key).
    _instance: str = PrivateAttr(default=DEFAULT_INSTANCE)

    @property
    def watched_namespaces(self) -> tuple[str, ...]:
        return (self.default_namespace, *self.developer_namespaces)

    @property
    def instance(self) -> str:
        # Not `self._instance`: pydantic finds private attributes through __getattr__,
        # and the planner asks this of every Service of every name.
        instance: str = self.__pydantic_private__["_instance"]  # type: ignore[index]
        return instance

    def with_instance(self, instance: str) -> OperatorConfig:
        """This config, driving the instance `instance` (configs compare by it too)."""
        copy = self.model_copy()
        copy._instance = instance
        return copy

    @_model_validator(mode="after")
    def _consistent(self) -> OperatorConfig:
        # Cross-field checks, all reported at once; each carries its own sub-path.
        found: list[tuple[tuple[str | int, ...], str, str]] = []
        seen: dict[str, int] = {}
        for i, ns in enumerate(self.developer_namespaces):
            path: tuple[str | int, ...] = ("developerNamespaces", i)
            if ns == self.default_namespace:
                found.append((path, f"{ns!r} is the default namespace", "remove it from here"))
            elif ns in seen:
                found.append((path, f"{ns!r} is already item {seen[ns]}", "remove the repeat"))
            seen.setdefault(ns, i)
        own = tuple(("labels", k) for k in (PLACEHOLDER_LABEL, EXCLUDE_LABEL, INSTANCE_LABEL))
        for section, key in (*own, ("annotations", SOURCE_ANNOTATION)):
            if key in getattr(self.placeholder, section):
                found.append((("placeholder", section, key), "is the operator's own", "remove it"))
        try:
            sample = render_virtual_service(
                self.virtual_service_template,
                service=SAMPLE_SERVICE,
                default_namespace=self.default_namespace,
            )
        except TemplateError as e:
            message = f"{e.field}: {e.message}" if e.field else e.message
            found.append((("virtualServiceTemplate",), message, e.fix))
        else:  # Istio's own schema: what the API server (and Istio) would refuse or drop
            violations = validate_virtual_service(sample)
            # The template's node tree, for line numbers: parsed only when there is a fault.
            tree = compose(self.virtual_service_template) if violations else None
            found += [
                (("virtualServiceTemplate",), f"{v.path}: {v.message}{_at(tree, v.at)}", v.fix)
                for v in violations
            ]
        if found:
            raise PydanticCustomError(
                "vso_many",
                "{summary}",
                {"summary": "; ".join(m for _, m, _ in found), "all": found},
            )
        return self


@dataclass(frozen=True)
class LoadedConfig:
    config: OperatorConfig
    warnings: tuple[str, ...]


def parse_config(text: str) -> LoadedConfig:
    """Validate a config.yaml body. Raises ConfigError only."""
    return _guarded(lambda: _validate(*_load(text)))


def parse_config_file(text: str) -> LoadedConfig:
    """Validate a bare config.yaml or a whole ConfigMap manifest. Raises ConfigError only."""
    return _guarded(lambda: _parse_config_file(text))


def config_from_configmap(obj: Mapping[str, Any] | None, where: str) -> LoadedConfig:
    """The operator's config from a ConfigMap object (`where` names it in messages).
    Raises ConfigError (problems naming the key and the fix) when the object is None,
    has no data.config.yaml, or the config is invalid."""
    if obj is None:
        fix = "create it (see deployments/config.yaml)"
        raise ConfigError([Problem("", f"{where} not found", fix)])
    section = obj.get("data")
    body = section.get(CONFIG_KEY) if isinstance(section, Mapping) else None
    if not isinstance(body, str):
        # "add it" and no more: the path already says where it goes.
        raise ConfigError([Problem(f"data.{CONFIG_KEY}", f"is missing from {where}", "add it")])
    return parse_config(body)


def _guarded(parse: Callable[[], LoadedConfig]) -> LoadedConfig:
    try:
        return parse()
    except ConfigError:
        raise
    except Exception as e:  # the contract: whatever the input, only ConfigError escapes
        problem = Problem("", f"cannot be read ({type(e).__name__}: {e})", "check the YAML syntax")
        raise ConfigError([problem]) from e


def _parse_config_file(text: str) -> LoadedConfig:
    data, root = _load(text)
    if isinstance(data, dict) and data.get("kind") == "ConfigMap":
        return config_from_configmap(data, "the ConfigMap")
    return _validate(data, root)


def _validate(data: Any, root: yaml.Node | None) -> LoadedConfig:
    """The config from the parsed YAML (`root`, its node tree, gives the line numbers)."""
    if data is None:
        raise ConfigError([Problem("", "is empty", "set at least defaultNamespace")])
    if not isinstance(data, dict):
        fix = "write 'defaultNamespace: <namespace>' and the other settings as keys"
        raise ConfigError([Problem("", f"must be a mapping, got {_kind(data)}", fix, 1)])
    warnings = _unknown_keys(data, OperatorConfig, (), root)
    try:
        # camelCase only in YAML: snake_case names are for Python callers.
        config = OperatorConfig.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as e:
        problems = [p for err in e.errors() for p in _problems(err, root)]
        raise ConfigError(problems[:_MAX_PROBLEMS]) from None
    return LoadedConfig(config, tuple(warnings))


def _load(text: str) -> tuple[Any, yaml.Node | None]:
    """The YAML document and its node tree, from one parse (the nodes carry the lines)."""
    if not isinstance(text, str):
        raise ConfigError([Problem("", "is not text", "pass the config.yaml text")])
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            [Problem("", f"is not valid YAML: {problem}", "check indentation and quoting", line)]
        ) from None
    finally:
        loader.dispose()


def _kind(value: object) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    return names.get(type(value), type(value).__name__)


def _problems(err: Mapping[str, Any], root: yaml.Node | None) -> list[Problem]:
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    prefix = ""
    if loc and loc[-1] == "[key]":  # the key itself is wrong, not its value
        prefix, loc = f"key {loc[-2]!r} ", loc[:-2]
    if err["type"] == "vso_many":
        found = [(loc + sub, msg, fix) for sub, msg, fix in ctx["all"]]
    elif err["type"] == "vso":
        found = [(loc, ctx["message"], ctx["fix"])]
    else:
        message, fix = _explain(err)
        found = [(loc, prefix + message, fix)]
    return [Problem(_path(at), msg, fix, _line(root, at)) for at, msg, fix in found]


def _explain(err: Mapping[str, Any]) -> tuple[str, str]:
    kind, got = err["type"], _kind(err.get("input"))
    if kind == "missing":
        return "is required", "add it (see docs/configuration-reference.md)"
    if kind == "string_type":
        return f"must be a string, got {got}", "put the value in quotes"
    if kind == "bool_type":
        return f"must be true or false, got {got}", "write true or false, without quotes"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, got {got}", "write one '- item' per line"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, got {got}", "write indented 'key: value' lines under it"
    if kind == "literal_error":
        return f"is {err.get('input')!r}", f"use one of {err['ctx']['expected']}"
    return str(err.get("msg", "is invalid")), "see docs/configuration-reference.md"


def _path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _at(template: yaml.Node | None, path: Sequence[str | int]) -> str:
    line = _line(template, path)
    return f" (template line {line})" if line else ""


def _line(node: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """The line of the deepest key or item of `path` found in the YAML node tree."""
    line = None
    for step in path:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                    line, child = key.start_mark.line + 1, value
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step >= 0:
            child = node.value[step] if step < len(node.value) else None
            line = child.start_mark.line + 1 if child is not None else line
        if child is None:
            break
        node = child
    return line


def _unknown_keys(
    data: Mapping[Any, Any], model: type[BaseModel], at: tuple[str, ...], root: yaml.Node | None
) -> list[str]:
    known = {to_camel(name): name for name in model.model_fields}
    warnings = []
    for key, value in data.items():
        path = (*at, str(key))
        if key in known:
            section = _section_model(model.model_fields[known[key]].annotation)
            if isinstance(value, dict) and section is not None:
                warnings += _unknown_keys(value, section, path, root)
            continue
        near = difflib.get_close_matches(str(key), list(known), n=1)
        hint = f"; did you mean '{'.'.join((*at, near[0]))}'?" if near else ""
        line = _line(root, path)
        where = f"{CONFIG_KEY} line {line}" if line else CONFIG_KEY
        warnings.append(f"{where}: unknown key '{'.'.join(path)}' ignored{hint}")
    return warnings


def _section_model(annotation: Any) -> type[_Model] | None:
    """The model of a nested section (`routing`, or an optional one like `serviceSelector`)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, _Model):
            return candidate
    return None


def diff_configs(old: OperatorConfig, new: OperatorConfig) -> list[str]:
    """One human line per changed setting, for the 'config reloaded' log line."""
    changes: list[str] = []

    def scalar(name: str, a: object, b: object) -> None:
        if a != b:
            changes.append(f"{name}: {a} -> {b}")

    def members(name: str, a: Mapping[str, str] | Sequence[str], b: Any) -> None:
        parts = [f"added {', '.join(k for k in b if k not in a)}"]
        parts.append(f"removed {', '.join(k for k in a if k not in b)}")
        if isinstance(a, Mapping):
            parts.append(f"changed {', '.join(k for k in a if k in b and a[k] != b[k])}")
        elif [k for k in a if k in b] != [k for k in b if k in a]:
            parts.append("changed order")
        parts = [p for p in parts if not p.endswith(" ")]
        if parts:
            changes.append(f"{name}: {', '.join(parts)}")

    scalar("defaultNamespace", old.default_namespace, new.default_namespace)
    members("developerNamespaces", old.developer_namespaces, new.developer_namespaces)
    scalar(
        "enablePlaceholderServices",
        old.enable_placeholder_services,
        new.enable_placeholder_services,
    )
    if old.virtual_service_template != new.virtual_service_template:
        changes.append("virtualServiceTemplate: changed")
    scalar("routing.header", old.routing.header, new.routing.header)
    scalar("routing.match", old.routing.match, new.routing.match)
    scalar("routing.baggageKey", old.routing.baggage_key, new.routing.baggage_key)
    members("placeholder.labels", old.placeholder.labels, new.placeholder.labels)
    members("placeholder.annotations", old.placeholder.annotations, new.placeholder.annotations)
    scalar("serviceSelector", _selector(old.service_selector), _selector(new.service_selector))
    scalar("allowHostConflicts", old.allow_host_conflicts, new.allow_host_conflicts)
    return changes


def _selector(selector: LabelSelector | None) -> str:
    if selector is None:
        return "(none)"
    return repr(selector.query()) if selector.query() else "(everything)"
