"""Progress bars for long work (a big startup backfill, ``quantcore export``).

tqdm on stderr, so stdout (log lines, an exported CSV) stays clean; it draws only when
stderr is a terminal (``disable=None``), so services, pipes and tests see nothing.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from tqdm import tqdm


def progress(total: int | None, desc: str, *, unit: str = "bar") -> tqdm[NoReturn]:
    """A bar with rate and ETA (when ``total`` is known); silent when stderr is no terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        disable=None,
        leave=False,
        mininterval=0.5,
        dynamic_ncols=True,
    )
