"""Import paths: how data files (routes, agents.yaml) name a Python object."""

from __future__ import annotations

import importlib
import re
from typing import Any

#: ``package.module:attribute`` (the attribute may be dotted: ``module:Class.method``).
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def import_path(path: str) -> Any:
    """The object a ``package.module:attribute`` path names.

    Raises ValueError for text that is not an import path, ImportError or
    AttributeError when the module or the attribute does not exist.
    """
    if not IMPORT_PATH.match(path):
        raise ValueError(f"{path!r} is not an import path 'package.module:attribute'")
    module_name, _, attribute = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target
