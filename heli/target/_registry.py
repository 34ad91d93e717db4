"""Finding targets: the ``heli.targets`` entry-point group.

A broken plugin (import error, wrong API version, duplicate name) is recorded
with a clear message and skipped, so the other targets keep working.
"""

from __future__ import annotations

import warnings
from importlib import metadata

from heli._errors import TargetError
from heli.target._base import TARGET_API_VERSION, Target

ENTRY_POINT_GROUP = "heli.targets"

_targets: dict[str, type[Target]] | None = None
_problems: dict[str, str] = {}
_instances: dict[str, Target] = {}


def _discover() -> dict[str, type[Target]]:
    global _targets
    if _targets is not None:
        return _targets
    found: dict[str, type[Target]] = {}
    origins: dict[str, str] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"{entry.value} (from {entry.dist.name if entry.dist else 'unknown package'})"
        try:
            cls = entry.load()
        except Exception as error:  # a plugin's import may fail in any way
            _problems[entry.name] = (
                f"The target plugin {entry.name!r} failed to import: "
                f"{type(error).__name__}: {error}."
            )
            continue
        problem = _check_plugin(entry.name, cls)
        if problem:
            _problems[entry.name] = problem
        elif entry.name in found and origins[entry.name] != origin:
            _problems[entry.name] = (
                f"Two plugins register the target name {entry.name!r}: {origins[entry.name]} "
                f"and {origin}; neither is used until one is uninstalled."
            )
            del found[entry.name]
        else:
            found[entry.name] = cls
            origins[entry.name] = origin
    for name in _problems:
        found.pop(name, None)
    _targets = found
    return found


def _check_plugin(name: str, cls: object) -> str:
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        return f"The target plugin {name!r} does not point at a heli.target.Target subclass."
    version = getattr(cls, "api_version", None)
    if version != TARGET_API_VERSION:
        return (
            f"The target plugin {name!r} was written for target API version {version!r}, "
            f"but this Heli offers version {TARGET_API_VERSION}."
        )
    return ""


def available_targets() -> list[str]:
    """Names of the targets that loaded without problems."""
    return sorted(_discover())


def target_problems() -> dict[str, str]:
    """Plugins that could not be loaded, with the reason for each."""
    _discover()
    return dict(_problems)


def get_target(name: str) -> Target:
    """The target registered as ``name`` (one shared instance)."""
    targets = _discover()
    if name in _instances:
        return _instances[name]
    if name not in targets:
        if name in _problems:
            raise TargetError(_problems[name])
        raise TargetError(
            f"There is no target named {name!r}; the available targets are "
            f"{available_targets()!r}."
        )
    _instances[name] = targets[name]()
    return _instances[name]


def register_target(cls: type[Target]) -> None:
    """Register a target class directly (tests, notebooks); plugins use entry points."""
    problem = _check_plugin(getattr(cls, "name", "?"), cls)
    if problem:
        raise TargetError(problem)
    _discover()[cls.name] = cls
    _instances.pop(cls.name, None)


def _warn_problems() -> None:
    for message in _problems.values():
        warnings.warn(message, stacklevel=3)
