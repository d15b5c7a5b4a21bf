"""The rich consoles of the CLI: at a terminal, its width; piped or logged, wide and never
wrapping text, so tables are not cut to 80 columns and paths stay on one line for scripts."""

from __future__ import annotations

from rich.console import Console

PIPE_WIDTH = 240  # columns of a table when the output is not a terminal


def console(*, stderr: bool = False) -> Console:
    out = Console(stderr=stderr)
    if out.is_terminal:
        return out
    return Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)
