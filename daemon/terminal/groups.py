"""MT5 group masks: ``"*USD*,!EUR*"`` -- comma-separated, ``*`` wildcards, ``!`` excludes (in order)."""

from __future__ import annotations

import re
from typing import Callable

__all__ = ["filter_group", "group_matcher"]


def _masks(group: str) -> list[tuple[bool, re.Pattern]]:
    out = []
    for raw in group.split(","):
        mask = raw.strip()
        if not mask:
            continue
        neg = mask.startswith("!")
        rx = re.compile("^" + ".*".join(re.escape(p) for p in mask.lstrip("!").split("*")) + "$", re.I)
        out.append((neg, rx))
    return out


def filter_group(names: list[str], group: str) -> list[str]:
    """The names a group selects, in the masks' order of inclusion."""
    out: list[str] = []
    for neg, rx in _masks(group):
        if neg:
            out = [n for n in out if not rx.match(n)]
        else:
            out += [n for n in names if rx.match(n) and n not in out]
    return out


def group_matcher(group: str) -> Callable[[str], bool]:
    """One name at a time: selected by the last mask that matches it (an exclusion after an inclusion wins)."""
    masks = _masks(group)

    def match(name: str) -> bool:
        hit = False
        for neg, rx in masks:
            if rx.match(name):
                hit = not neg
        return hit

    return match
