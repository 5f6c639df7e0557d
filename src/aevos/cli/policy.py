"""``aevos policy``: test, check, explain and show the policies of a directory.

``aevos policy test`` is meant for a team's CI: exit status 0 when every case passes, 1
when a case fails, 2 when a policy or test file is invalid (each problem printed as
``FILE:LINE: message``, the form editors and CI annotations understand).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..errors import PolicyLoadError
from ..policy import Explanation, Policy, PolicySet, run_policy_tests
from ..policy.engine import RulePolicy
from .common import _json_option, _print_wide, _reports_errors, err, out

policy_cli = typer.Typer(
    help="Test, check, explain and show policies (YAML or Python files).", no_args_is_help=True
)

_RESULT_STYLE = {
    "allow": "green",
    "deny": "red",
    "review": "yellow",
    "approve": "yellow",
}

DirArgument = Annotated[Path, typer.Argument(help="Directory of policies and *.test.yaml files.")]
DirOption = Annotated[Path, typer.Option("--dir", help="Directory of policies.")]
VersionOption = Annotated[
    int | None, typer.Option("--version", min=1, help="This version (default: the newest).")
]


def _problems(exc: PolicyLoadError) -> typer.Exit:
    for file, line, message in exc.problems:
        where = f"{file}:{line}" if line is not None else file
        err.print(
            Text.assemble((where, "bold"), ": ", ("error", "bold red"), f": {message}"),
            soft_wrap=True,
        )
    err.print(f"error [{exc.code}]: {len(exc.problems)} problem(s) in policy files", markup=False)
    return typer.Exit(2)


def _load(directory: Path) -> PolicySet:
    try:
        return PolicySet.load(directory)
    except PolicyLoadError as exc:
        raise _problems(exc) from None


@policy_cli.command("test")
@_reports_errors
def policy_test(directory: DirArgument = Path("policies")) -> None:
    """Run the *.test.yaml cases: exit 0 if all pass, 1 on failures, 2 on invalid files."""
    try:
        report = run_policy_tests(directory)
    except PolicyLoadError as exc:
        raise _problems(exc) from None
    table = Table(title=f"policy tests in {directory}", title_justify="left", box=box.SIMPLE)
    table.add_column("", no_wrap=True)
    table.add_column("policy", no_wrap=True)
    table.add_column("case", overflow="fold")
    table.add_column("expected", no_wrap=True)
    table.add_column("got", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for case in report.cases:
        expected = case.expected + (f" ({case.expected_rule})" if case.expected_rule else "")
        got = f"{case.result} ({case.rule})" if case.result is not None else "error"
        table.add_row(
            Text("PASS", "green") if case.passed else Text("FAIL", "bold red"),
            f"{case.policy} v{case.version}",
            Text(case.case),
            Text(expected),
            Text(got),
            Text(f"{case.location}: {case.message}" if not case.passed else ""),
        )
    _print_wide(table)
    for name in report.untested:
        err.print(f"warning: policy {name} has no test cases", markup=False)
    style = "green" if report.passed else "bold red"
    out.print(Text(report.summary(), style))
    raise typer.Exit(0 if report.passed else 1)


@policy_cli.command("check")
@_reports_errors
def policy_check(directory: DirArgument = Path("policies")) -> None:
    """Load and validate every policy; exit 2 (listing each problem) if any is invalid."""
    policies = _load(directory)
    table = Table(
        title=f"{len(policies)} valid polic{'y' if len(policies) == 1 else 'ies'} in {directory}",
        title_justify="left",
        box=box.SIMPLE,
    )
    for column in ("policy", "version", "kind", "rules", "inputs", "defined at", "sha256"):
        table.add_column(column, overflow="fold")
    for policy in policies:
        table.add_row(
            policy.name,
            str(policy.version),
            policy.kind,
            str(len(policy.rules)) if isinstance(policy, RulePolicy) else "python",
            str(len(policy.inputs)),
            Text(policy.location),
            policy.digest[:12],
        )
    _print_wide(table)


@policy_cli.command("explain")
@_reports_errors
def policy_explain(
    name: Annotated[str, typer.Argument(help="Policy name.")],
    input_json: Annotated[
        str, typer.Option("--input", help="The input as a JSON object, e.g. '{\"claim\": {...}}'.")
    ],
    directory: DirOption = Path("policies"),
    version: VersionOption = None,
) -> None:
    """Evaluate a policy on an input and show, rule by rule, why it decided so."""
    data = _json_option("--input", input_json, dict)
    explanation = _load(directory).explain(name, data, version=version)
    _print_explanation(explanation)


def _print_explanation(explanation: Explanation) -> None:
    for line in explanation.render().splitlines():
        text = Text(line)
        if "MATCHED, decides" in line:
            text.stylize("bold green")
        elif line.lstrip().startswith("when "):
            text.stylize("cyan")
        elif line.startswith("decision:"):
            text.stylize("bold " + _RESULT_STYLE.get(explanation.decision.result, ""))
        out.print(text, soft_wrap=True)


@policy_cli.command("show")
@_reports_errors
def policy_show(
    name: Annotated[str, typer.Argument(help="Policy name.")],
    directory: DirOption = Path("policies"),
    version: VersionOption = None,
) -> None:
    """A policy's declaration: inputs, rules in order, default and redactions."""
    policy = _load(directory).get(name, version)
    _print_policy(policy)


def _print_policy(policy: Policy) -> None:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(overflow="fold")
    rows = [
        ("policy", f"{policy.name} v{policy.version}"),
        ("kind", policy.kind),
        ("description", policy.description or "-"),
        ("defined at", policy.location),
        ("sha256", policy.digest),
    ]
    if policy.redact:
        rows.append(("redact", ", ".join(policy.redact)))
    for label, value in rows:
        summary.add_row(label, Text(value))
    _print_wide(summary)
    inputs = Table(title="input", title_justify="left", box=box.SIMPLE)
    inputs.add_column("field")
    inputs.add_column("type")
    inputs.add_column("required")
    for field in policy.inputs:
        inputs.add_row(field.path, field.type, "no" if field.optional else "yes")
    _print_wide(inputs)
    if not isinstance(policy, RulePolicy):
        out.print("decided by a Python function; see its source", markup=False)
        return
    rules = Table(
        title="rules (the first that matches decides)", title_justify="left", box=box.SIMPLE
    )
    for column in ("#", "rule", "when", "decision", "reason"):
        rules.add_column(column, overflow="fold")
    for position, rule in enumerate(policy.rules, 1):
        rules.add_row(
            str(position),
            Text(rule.id),
            Text(rule.condition.text),
            Text(rule.result, _RESULT_STYLE.get(rule.result, "")),
            Text(rule.reason),
        )
    default = policy.default
    rules.add_row(
        "",
        "default",
        "",
        Text(default.result, _RESULT_STYLE.get(default.result, "")),
        Text(default.reason),
    )
    _print_wide(rules)
