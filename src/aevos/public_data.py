"""Where the public data sets that aevos ships are found.

The main job, the examples, the tests and the benchmarks read the real data sets in the
repository's ``data/`` folder (banking77, insurance claims, SROIE receipts), and find them
only through :func:`data_dir`, so one variable, ``AEVOS_DATA_DIR``, moves all of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataNotFoundError

ENV_VAR = "AEVOS_DATA_DIR"

# src/aevos/public_data.py -> the checkout's data/ (an editable install, as README says).
_CHECKOUT_DATA = Path(__file__).resolve().parents[2] / "data"


def data_dir() -> Path:
    """``$AEVOS_DATA_DIR`` when set, else the ``data/`` folder of the source checkout.

    Raises :class:`DataNotFoundError` when the chosen folder does not exist, naming it and
    the variable that moves it.
    """
    configured = os.environ.get(ENV_VAR)
    root = Path(configured) if configured else _CHECKOUT_DATA
    if not root.is_dir():
        origin = f"${ENV_VAR}" if configured else "the source checkout's data/"
        raise DataNotFoundError(
            f"the data sets are not at {root} ({origin}); set {ENV_VAR} to a directory "
            "holding banking77/, insurance_claims/ and receipts/ (the repository's data/)"
        )
    return root


def data_file(*parts: str) -> Path:
    """A file or folder of a data set, e.g. ``data_file("banking77", "train.csv")``.

    Raises :class:`DataNotFoundError` naming the full path when it is missing.
    """
    path = data_dir().joinpath(*parts)
    if not path.exists():
        raise DataNotFoundError(
            f"{'/'.join(parts)} is not at {path}; set {ENV_VAR} to a directory holding it"
        )
    return path
