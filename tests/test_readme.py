"""README.md's set-up commands are the ones CI runs, and they install what CI tested."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands_pinned_by_the_constraints() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("&& aevos demo") and tests.endswith("&& python -m pytest")
    for command in commands:
        assert "-c constraints.txt" in command and "\n" not in command


def test_ci_runs_the_readme_test_command_verbatim_in_a_fresh_venv() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = _readme_commands()[1]
    assert test_command in script.splitlines()
    # The venv is made before the command runs, so nothing installed on the machine counts.
    assert script.index("python3 -m venv") < script.index(test_command)


def test_constraints_pin_every_dependency_exactly() -> None:
    pins = [
        line
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert pins, "constraints.txt is empty"
    loose = [line for line in pins if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=\s]+", line)]
    assert not loose, loose
    names = {line.split("==")[0].lower().replace("_", "-") for line in pins}
    # The packages whose drift broke a fresh install before, and the core ones.
    for required in ("pytest", "schemathesis", "sqlalchemy", "fastapi", "hypothesis"):
        assert required in names, required


def test_nothing_reads_the_data_from_outside_the_repository() -> None:
    offenders = []
    for folder in ("src", "tests", "examples", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if re.search(
                r"""["']shared["']\s*/|\.\./shared|parents\[\d\]\s*/\s*["']shared""", text
            ):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
