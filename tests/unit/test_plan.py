"""Planning: the actions that turn the actual state into the desired one."""

from __future__ import annotations

import copy
from typing import Any

from conftest_helpers import none  # noqa: F401  (placeholder, replaced below)
