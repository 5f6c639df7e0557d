"""Errors of the evolution loop: recipes, labels, datasets, retraining, replay, rollouts, monitors."""

from __future__ import annotations

from typing import Any

from .base import AevosError

# -- evolution: training recipes and certification ---------------------------------------------
#     EvolutionError
#     ├── RecipeNotFoundError     no registered recipe has that name
#     ├── RecipeParameterError    a recipe's parameters are unknown, of the wrong type or out of
#     │                           range (``parameter`` names the first one at fault)
#     ├── DatasetError            a dataset a recipe or a certification cannot use: empty, rows of
#     │                           the wrong shape, fewer than two labels, mismatched lengths
#     ├── RetrainingConfigError   a retraining configuration that cannot be (``field`` names it)
#     ├── RetrainingNotConfiguredError  retraining asked of a model with no configuration
#     └── RetrainingFailedError   a retraining ended without a certified candidate (``reason``)
# Registering a recipe under a name already taken is a DefinitionError (a programming mistake,
# found when the module defining it is imported). Messages name fields and counts, never the
# texts of a dataset (they are customers' words).


class EvolutionError(AevosError):
    code = "evolution_error"


class RecipeNotFoundError(EvolutionError, LookupError):
    code = "recipe_not_found"


class RecipeParameterError(EvolutionError, ValueError):
    code = "invalid_recipe_parameters"

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "parameter": self.parameter}


class DatasetError(EvolutionError, ValueError):
    code = "invalid_dataset"


# -- evolution: labels and datasets -------------------------------------------------------------
# (A label naming a case id the tenant has no case for is a CaseNotFoundError, above.)
#     EvolutionError
#     ├── LabelInputError          a label, case id, source or batch that cannot be recorded
#     │                            (``field`` names the one at fault)
#     ├── DatasetNotFoundError     no dataset version of the tenant has that digest
#     └── ExportFormatError        an export format that is unknown, or whose library is not
#                                  installed (Parquet needs the ``parquet`` extra: pyarrow)


class LabelInputError(EvolutionError, ValueError):
    code = "invalid_label"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class DatasetNotFoundError(EvolutionError, LookupError):
    code = "dataset_not_found"


class ExportFormatError(EvolutionError, ValueError):
    code = "export_format_unavailable"


class ReportInputError(EvolutionError, ValueError):
    """Evolution report parameters that cannot be answered (``field`` names the one at fault)."""

    code = "invalid_report"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


# -- evolution: retraining (see the tree of evolution errors above) ---------------------------


class RetrainingConfigError(EvolutionError, ValueError):
    code = "invalid_retraining_config"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class RetrainingNotConfiguredError(EvolutionError, LookupError):
    code = "retraining_not_configured"


class RetrainingFailedError(EvolutionError):
    """A retraining that ended without a certified candidate: ``reason`` says why (the
    same words its retraining record keeps)."""

    code = "retraining_failed"


# -- evolution: replay ------------------------------------------------------------------------
#     EvolutionError
#     ├── ReplayInputError        a replay that cannot be asked for (``field`` names the input)
#     └── ReplayNotFoundError     no replay of the tenant has that id


class ReplayInputError(EvolutionError, ValueError):
    code = "invalid_replay"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class ReplayNotFoundError(EvolutionError, LookupError):
    code = "replay_not_found"


# -- evolution: rollouts ----------------------------------------------------------------------
#
#     RolloutError
#     ├── RolloutNotFoundError     no rollout of the tenant has that id
#     ├── RolloutConflictError     a second active rollout of a model, or an action that lost
#     │                            a race with another one (the rollout moved under it), or
#     │                            one its state does not allow
#     └── RolloutInputError        a rollout's definition that cannot be (``field`` names it)


class RolloutError(EvolutionError):
    code = "rollout_error"


class RolloutNotFoundError(RolloutError, LookupError):
    code = "rollout_not_found"


class RolloutConflictError(RolloutError):
    code = "rollout_conflict"


class RolloutInputError(RolloutError, ValueError):
    code = "invalid_rollout"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


# -- evolution: monitors ----------------------------------------------------------------------


class MonitorError(AevosError):
    code = "monitor_error"


class MonitorConfigError(MonitorError, ValueError):
    """A monitor configuration refused: ``field`` names the setting at fault."""

    code = "invalid_monitor_config"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class MonitorNotConfiguredError(MonitorError, LookupError):
    code = "monitor_not_configured"


class AlertNotFoundError(MonitorError, LookupError):
    code = "alert_not_found"
