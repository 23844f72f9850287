"""Which operator instance this is: the identity written on every object it creates.

Several instances may share a cluster (one per default namespace, two Helm releases).
Each labels what it creates with `virtualservice-operator/instance: <identity>`
(constants.INSTANCE_LABEL) and
selects on that label in its caches, drift correction, orphan sweep and deletes, so it
never touches another instance's objects, nor objects without the label (made by a
version before instances existed). Adopting those is an explicit step: labelling them
(docs/upgrade.md, "From a version without instances").

The identity defaults to `<namespace>.<name>` of the instance's ConfigMap: unique per
install, since two installs cannot share one ConfigMap. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from virtualservice_operator.domain.constants import CONFIG_MAP_NAME, OPERATOR_NAMESPACE

_MAX = 63  # a label value
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class InstanceError(ValueError):
    pass


def default_instance(config_map_namespace: str, config_map_name: str) -> str:
    """`<namespace>.<name>`, or when longer than a label value allows, its first
    characters and a hash of the whole (still unique, still readable)."""
    full = f"{config_map_namespace}.{config_map_name}"
    if len(full) <= _MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[: _MAX - len(digest) - 1].rstrip('-_.')}-{digest}"


def check_instance(value: str) -> str:
    """`value` if it can be a label value, else InstanceError saying how to fix it."""
    if not value or len(value) > _MAX or not _VALUE.match(value):
        raise InstanceError(
            f"-instance={value!r} is not a valid label value: use 1 to {_MAX} letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return value


def owner(instance: str) -> str:
    """Who made an object, for messages: its instance, or none we know."""
    return f"instance {instance}" if instance else "no instance label"


# The identity of the standard install (deployments/, the chart's default release).
DEFAULT_INSTANCE: Final = default_instance(OPERATOR_NAMESPACE, CONFIG_MAP_NAME)
