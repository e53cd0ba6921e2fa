"""What the app's blueprints share: the core, the settings and the type map.

Kept on ``app.extensions`` (Flask's place for such state), never at module level,
so that several apps (the tests make many) never see each other's core.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from eda.core import Core
from eda.settings import Settings
from webhooks.mapping import TypeMap

#: The key under ``app.extensions``.
KEY = "eda"


@dataclass(frozen=True)
class Services:
    """One app's core API, settings and webhook type map."""

    core: Core
    settings: Settings
    types: TypeMap


def install(app: Flask, services: Services) -> None:
    app.extensions[KEY] = services


def services() -> Services:
    """The services of the app handling the current request."""
    found: Services = current_app.extensions[KEY]
    return found
