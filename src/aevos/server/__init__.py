"""The HTTP API (FastAPI). Import it explicitly: ``import aevos`` never imports the server."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
