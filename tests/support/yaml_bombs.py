"""Hostile YAML for the input tests: what a config, manifest or pipeline file may throw at a parser."""

from __future__ import annotations


def alias_bomb(levels: int, fan_out: int = 9) -> str:
    """The "billion laughs": each level a list of ``fan_out`` aliases of the one before."""
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * fan_out)}]")
    return "\n".join(lines) + "\n"
