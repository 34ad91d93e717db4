"""``heli targets``: the installed targets (version, target API version, package,
capability summary) and the plugins that could not be loaded, with why."""

from __future__ import annotations

import argparse
from importlib import metadata


def add_targets_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="list installed targets, their capabilities, and "
                                       "broken plugins")
    p.add_argument("--markdown", action="store_true",
                   help="print the listing as a Markdown table (docs/scorecards/targets.md)")
    p.set_defaults(func=cmd_targets)


def summarize(capabilities: dict[str, object]) -> str:
    """``{"ops": [...], "dtypes": [...], ...}`` as one short line."""
    if not capabilities:
        return "(not declared)"
    parts = []
    for key, value in capabilities.items():
        if key == "ops" and isinstance(value, list | tuple | set | frozenset):
            ops = sorted(map(str, value))
            shown = ", ".join(ops[:8]) + (", ..." if len(ops) > 8 else "")
            parts.append(f"{len(ops)} ops ({shown})")
        elif isinstance(value, list | tuple | set | frozenset):
            parts.append(f"{key}: {', '.join(map(str, value))}")
        else:
            parts.append(f"{key}: {value}")
    return "; ".join(parts)


def _packages() -> dict[str, str]:
    """Target name → the distribution whose entry point registers it."""
    from heli.target import ENTRY_POINT_GROUP

    found: dict[str, str] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist.name if entry.dist else "?"
        found[entry.name] = f"{found[entry.name]}, {dist}" if entry.name in found else dist
    return found


def _describe(name: str) -> tuple[str, str, str, str]:
    """(version, API version, description, capabilities) of an installed target."""
    from heli.target import get_target

    try:
        target = get_target(name)
    except Exception as error:  # a plugin's constructor may fail in any way
        return "?", "?", "", f"cannot be created: {type(error).__name__}: {error}"
    try:
        summary = summarize(dict(target.capabilities()))
    except Exception as error:  # nor may a plugin's capabilities() break the listing
        summary = f"capabilities() failed: {type(error).__name__}: {error}"
    return (str(target.version or "-"), str(target.api_version), target.description, summary)


def targets_markdown() -> str:
    """The ``heli targets`` listing as a Markdown page."""
    from heli.target import TARGET_API_VERSION, available_targets, target_problems

    packages = _packages()
    lines = ["# Installed targets", "",
             f"`heli targets --markdown`: this Heli offers target API version "
             f"{TARGET_API_VERSION}.", "",
             "| name | version | API | package | capabilities | description |",
             "|---|---|---|---|---|---|"]
    for name in available_targets():
        version, api, description, summary = _describe(name)
        cells = [name, version, api, packages.get(name, "(registered in code)"), summary,
                 description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    problems = target_problems()
    if problems:
        lines += ["", f"{len(problems)} plugin(s) could not be loaded:", ""]
        lines += [f"* `{name}`: {message}" for name, message in sorted(problems.items())]
    return "\n".join(lines) + "\n"


def cmd_targets(args: argparse.Namespace) -> int:
    if args.markdown:
        print(targets_markdown(), end="")
        return 0
    from rich.table import Table

    from heli.cli._commands import console
    from heli.target import TARGET_API_VERSION, available_targets, target_problems

    packages = _packages()
    table = Table(title=f"targets (this Heli offers target API version {TARGET_API_VERSION})",
                  show_edge=False)
    for col in ("name", "version", "API", "package", "capabilities", "description"):
        table.add_column(col)
    for name in available_targets():
        version, api, description, summary = _describe(name)
        table.add_row(name, version, api, packages.get(name, "(registered in code)"), summary,
                      description)
    console.print(table)
    problems = target_problems()
    if problems:
        # Plain lines, unwrapped: each message is what the user needs to act on.
        print(f"{len(problems)} plugin(s) could not be loaded (the targets above still work):")
        for name, message in sorted(problems.items()):
            print(f"  {name}: {message}")
    return 0
