"""The served OpenAPI schema is pinned: an API change shows up as a diff of the snapshot.

Regenerate after an intended change with ``AEVOS_UPDATE_SNAPSHOTS=1 python -m pytest
tests/test_openapi.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi.testclient import TestClient

from aevos import Aevos
from aevos.server import create_app

SNAPSHOT = Path(__file__).with_name("snapshots") / "openapi.json"


def test_openapi_schema_matches_the_snapshot(sqlite_url: str) -> None:
    app = Aevos(sqlite_url)
    try:
        with TestClient(create_app(app)) as client:
            served = client.get("/openapi.json").json()
    finally:
        app.close()
    text = json.dumps(served, indent=2, sort_keys=True) + "\n"
    if os.environ.get("AEVOS_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text(), "the API changed: review, then regenerate the snapshot"
