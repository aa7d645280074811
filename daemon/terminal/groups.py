"""MT5 group masks: ``"*USD*,!EUR*"`` -- comma-separated, ``*`` wildcards, ``!`` excludes (in order).

Matching is the two-pointer wildcard walk (O(len(mask) * len(name)) at worst), not a regex:
a mask comes from requests, and ``.*`` chains backtrack exponentially.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["filter_group", "group_matcher", "wildcard"]


def wildcard(mask: str, name: str) -> bool:
    """Does ``name`` match ``mask`` (``*`` = any run, case-insensitive)?"""
    mask, name = mask.casefold(), name.casefold()
    m = n = 0
    star, mark = -1, 0
    while n < len(name):
        if m < len(mask) and mask[m] != "*" and mask[m] == name[n]:
            m += 1
            n += 1
        elif m < len(mask) and mask[m] == "*":
            star, mark = m, n
            m += 1
        elif star >= 0:
            m = star + 1
            mark += 1
            n = mark
        else:
            return False
    while m < len(mask) and mask[m] == "*":
        m += 1
    return m == len(mask)


def _masks(group: str) -> list[tuple[bool, str]]:
    out = []
    for raw in group.split(","):
        mask = raw.strip()
        if mask:
            out.append((mask.startswith("!"), mask.lstrip("!")))
    return out


def filter_group(names: list[str], group: str) -> list[str]:
    """The names a group selects, in the masks' order of inclusion."""
    out: list[str] = []
    for neg, mask in _masks(group):
        if neg:
            out = [n for n in out if not wildcard(mask, n)]
        else:
            out += [n for n in names if wildcard(mask, n) and n not in out]
    return out


def group_matcher(group: str) -> Callable[[str], bool]:
    """One name at a time: selected by the last mask that matches it (an exclusion after an inclusion wins)."""
    masks = _masks(group)

    def match(name: str) -> bool:
        hit = False
        for neg, mask in masks:
            if wildcard(mask, name):
                hit = not neg
        return hit

    return match
