"""Progress bars that read well on a terminal and in a log file.

On a terminal the bar redraws as usual; when stderr is not a terminal (a log file, CI), it
writes a line at most every LOG_INTERVAL seconds instead of one per step, so a long run leaves a
few lines of progress rather than kilobytes of carriage returns."""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between progress lines when stderr is not a terminal


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar on stderr (same arguments as tqdm), throttled to a line per LOG_INTERVAL
    seconds when stderr is not a terminal."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    if not kwargs["file"].isatty():
        kwargs.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(iterable, **kwargs)
