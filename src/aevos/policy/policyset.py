"""A set of loaded policies, by name and version: what an application evaluates against."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import PolicyLoadError, PolicyNotFoundError
from .document import load_policy_file
from .engine import Decision, Explanation, Policy
from .python import load_python_file

_TEST_SUFFIXES = (".test.yaml", ".test.yml")


def policy_files(directory: Path) -> list[Path]:
    """The policy files of a directory (not recursive): ``*.yaml``, ``*.yml``, ``*.py``."""
    return [
        path
        for path in sorted(directory.iterdir())
        if path.is_file()
        and not path.name.startswith((".", "_"))
        and not path.name.endswith(_TEST_SUFFIXES)
        and path.suffix in (".yaml", ".yml", ".py")
    ]


class PolicySet:
    """Policies by name and version; several versions of one name may be loaded together."""

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        self._policies: dict[str, dict[int, Policy]] = {}
        for policy in policies:
            self.add(policy)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PolicySet:
        """Every policy in ``directory``: YAML files, and the policies that its ``*.py``
        modules define with :func:`python_policy` (the modules are imported).

        Raises PolicyLoadError listing the problems of every file, not only the first.
        """
        root = Path(directory)
        if not root.is_dir():
            raise PolicyLoadError([(str(root), None, "no such directory")])
        policies = cls()
        problems: list[tuple[str, int | None, str]] = []
        for path in policy_files(root):
            try:
                loaded = (
                    [load_policy_file(path)] if path.suffix != ".py" else load_python_file(path)
                )
                for policy in loaded:
                    policies.add(policy)
            except PolicyLoadError as exc:
                problems += exc.problems
        if problems:
            raise PolicyLoadError(problems)
        return policies

    def add(self, policy: Policy) -> None:
        """Add a policy; PolicyLoadError (naming both places) if its name and version exist."""
        versions = self._policies.setdefault(policy.name, {})
        other = versions.get(policy.version)
        if other is not None:
            raise PolicyLoadError(
                [
                    (
                        policy.source,
                        policy.line,
                        f"policy {policy.name} v{policy.version} is also defined at "
                        f"{other.location}",
                    )
                ]
            )
        versions[policy.version] = policy

    def get(self, name: str, version: int | None = None) -> Policy:
        """The policy ``name`` at ``version``, or its newest version."""
        versions = self._policies.get(name)
        if not versions:
            known = ", ".join(sorted(self._policies)) or "none"
            raise PolicyNotFoundError(f"no policy named {name!r} (loaded: {known})")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            known = ", ".join(str(v) for v in sorted(versions))
            raise PolicyNotFoundError(f"policy {name!r} has no version {version} (loaded: {known})")
        return versions[version]

    def evaluate(
        self, name: str, input: Mapping[str, Any], *, version: int | None = None
    ) -> Decision:
        """Decide with policy ``name`` (its newest version unless ``version``) on ``input``."""
        return self.get(name, version).evaluate(input)

    def explain(
        self, name: str, input: Mapping[str, Any], *, version: int | None = None
    ) -> Explanation:
        """Decide as :meth:`evaluate` does, and return how each rule fared."""
        return self.get(name, version).explain(input)

    def names(self) -> list[str]:
        return sorted(self._policies)

    def __iter__(self) -> Iterator[Policy]:
        for name in sorted(self._policies):
            versions = self._policies[name]
            yield from (versions[v] for v in sorted(versions))

    def __len__(self) -> int:
        return sum(len(versions) for versions in self._policies.values())

    def __contains__(self, name: object) -> bool:
        return name in self._policies

    def __repr__(self) -> str:
        return f"<PolicySet {', '.join(f'{p.name} v{p.version}' for p in self)}>"
