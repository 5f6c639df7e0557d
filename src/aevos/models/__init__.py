"""The model layer: a registry of content-addressed versions, adapters, and the gateway."""

from __future__ import annotations

from .types import ModelAdapter, ModelCard, ModelVersion, Prediction

__all__ = ["ModelAdapter", "ModelCard", "ModelVersion", "Prediction"]
