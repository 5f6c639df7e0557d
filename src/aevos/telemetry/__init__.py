"""What operators watch: Prometheus metrics and the console's dashboards, read from the
database (runs, tasks, audit records of model calls), and the evolution report."""

from .report import EvolutionReport, Reports

__all__ = ["EvolutionReport", "Reports"]
