"""The registry of training recipes: named, versioned, one per name, none global."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import DefinitionError, RecipeNotFoundError
from .classifiers import builtin_recipes
from .dataset import Dataset
from .recipes import P, Recipe, Trained, TrainingResult, evaluate, params_to_json

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class RecipeRegistry:
    """Recipes by name. ``RecipeRegistry()`` holds the built-in recipes
    (``tfidf-logreg``, ``embedding-logreg``, ``ensemble``); ``builtins=False`` starts empty.

    No registry is global: the app (or a test) owns one and adds its own recipes to it.
    """

    def __init__(self, *, builtins: bool = True) -> None:
        self._recipes: dict[str, Recipe[Any]] = {}
        self._lock = threading.Lock()
        if builtins:
            for recipe in builtin_recipes():
                self.add(recipe)

    def add(self, recipe: Recipe[Any]) -> Recipe[Any]:
        """Register ``recipe``; a name already taken is a :class:`DefinitionError`."""
        name = recipe.name
        if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS or len(name) > 64:
            raise DefinitionError(
                f"recipe name {str(name)[:70]!r} must be 1-64 characters of a-z 0-9 - _ ."
            )
        if isinstance(recipe.version, bool) or not isinstance(recipe.version, int):
            raise DefinitionError(f"recipe {name!r}: the version is an integer")
        if recipe.version < 1:
            raise DefinitionError(f"recipe {name!r}: the version starts at 1")
        if not (
            isinstance(recipe.params_type, type) and dataclasses.is_dataclass(recipe.params_type)
        ):
            raise DefinitionError(f"recipe {name!r}: params must be a dataclass type")
        if not recipe.params_type.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise DefinitionError(
                f"recipe {name!r}: {recipe.params_type.__name__} must be a frozen dataclass"
            )
        if not callable(recipe.train):
            raise DefinitionError(f"recipe {name!r}: train must be callable")
        with self._lock:
            existing = self._recipes.get(name)
            if existing is not None:
                raise DefinitionError(
                    f"recipe {name!r} is already registered ({existing.ref}); a registry holds "
                    "one version of each recipe: change the recipe and raise its version"
                )
            self._recipes[name] = recipe
        return recipe

    def recipe(
        self, name: str, *, version: int = 1, params: type[P], description: str = ""
    ) -> Callable[[Callable[[Dataset, P], Trained]], Callable[[Dataset, P], Trained]]:
        """Decorator: register the decorated ``train(dataset, params)`` as recipe ``name``."""

        def decorate(fn: Callable[[Dataset, P], Trained]) -> Callable[[Dataset, P], Trained]:
            self.add(Recipe(name, version, params, fn, description or (fn.__doc__ or "")))
            return fn

        return decorate

    def get(self, name: str) -> Recipe[Any]:
        """The recipe called ``name`` (:class:`RecipeNotFoundError` lists the known ones)."""
        with self._lock:
            recipe = self._recipes.get(name)
            if recipe is None:
                known = ", ".join(sorted(self._recipes)) or "none"
                raise RecipeNotFoundError(
                    f"no recipe is called {str(name)[:70]!r} (known: {known})"
                )
            return recipe

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._recipes)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._recipes

    def __iter__(self) -> Iterator[Recipe[Any]]:
        with self._lock:
            return iter([self._recipes[n] for n in sorted(self._recipes)])

    def train(
        self,
        name: str,
        dataset: Dataset,
        params: Any = None,
        *,
        evaluation: Dataset | None = None,
    ) -> TrainingResult:
        """Run recipe ``name`` on ``dataset`` and measure it on ``evaluation`` (if given).

        ``params`` is the recipe's parameter dataclass, a JSON mapping of it, or None for the
        defaults; it is validated before anything is trained.
        """
        recipe = self.get(name)
        chosen = recipe.params(params)
        if not isinstance(dataset, Dataset):
            raise DefinitionError(f"a recipe trains on a Dataset, not {type(dataset).__name__}")
        trained = recipe.train(dataset, chosen)
        metrics = None if evaluation is None else evaluate(trained.model, evaluation)
        return TrainingResult(
            recipe=recipe.name,
            recipe_version=recipe.version,
            params=params_to_json(chosen),
            trained=trained,
            n_train=len(dataset),
            metrics=metrics,
        )
