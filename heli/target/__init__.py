"""The public target API: what a built-in target or a vendor plugin implements."""

from heli.target._base import (
    SUPPORTED,
    TARGET_API_VERSION,
    CompileOptions,
    Executable,
    Support,
    Target,
)
from heli.target._registry import (
    ENTRY_POINT_GROUP,
    available_targets,
    get_target,
    register_target,
    target_problems,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "SUPPORTED",
    "TARGET_API_VERSION",
    "CompileOptions",
    "Executable",
    "Support",
    "Target",
    "available_targets",
    "get_target",
    "register_target",
    "target_problems",
]
