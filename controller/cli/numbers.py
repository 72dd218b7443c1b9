"""Number options: bounded and finite, so ``nan`` or ``inf`` given for a speed or a wait exits 2."""

from __future__ import annotations

import math

import click


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses NaN and infinity: click's lets ``nan`` through (every comparison
    with it is false) and ``inf`` past an unbounded or open upper end."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
