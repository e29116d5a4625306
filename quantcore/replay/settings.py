"""``exchange.replay``: where a replay reads its bars, which range, and how fast.

A schema of its own (checked by msgspec like the rest of the config) so that the config
module only points at it; the ``quantcore replay`` options override its fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct, field

from quantcore.events import epoch_ms


class ReplaySettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to replay. An unset ``source``/``path`` means the store the config's own
    recorders write (the first CSV recorder's files, else the first SQLite recorder's)."""

    source: str | None = None
    """A registered store kind: ``csv``, ``sqlite``, ``postgres``, ``parquet`` (more plug in,
    see ``sources``)."""
    path: str | None = None
    """CSV: the path template (``{symbol}``, ``{interval}``); SQLite: the database file."""
    table: str = "bars"
    dsn: str | None = None
    """For server databases (PostgreSQL), which connect by DSN rather than a path."""
    start: str | None = field(default=None, name="from")
    """First open time replayed (UTC ``YYYY-MM-DD[ HH:MM[:SS]]``); unset: the store's first."""
    end: str | None = field(default=None, name="to")
    """Bars opening before this (exclusive); unset: up to the store's last bar."""
    speed: Annotated[float, Meta(gt=0)] | Literal["max"] = "max"
    """``max``: as fast as the components take them; N: N times market time."""

    @property
    def rate(self) -> float | None:
        """Market seconds per wall second; None for ``max``."""
        return None if self.speed == "max" else float(self.speed)

    def range_ms(self) -> tuple[int | None, int | None]:
        """``from``/``to`` as epoch ms; ValueError naming the field and the value."""
        return parse_time(self.start, "from"), parse_time(self.end, "to")

    def merged(self, **given: object) -> ReplaySettings:
        """These settings with the given (non-None) values replaced."""
        return msgspec.structs.replace(self, **{k: v for k, v in given.items() if v is not None})


def parse_time(text: str | None, where: str) -> int | None:
    """``2024-09-04``, ``2024-09-04 02:30`` or ISO 8601 (UTC unless an offset is given)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(str(text).strip().replace("T", " ").removesuffix("Z"))
    except ValueError:
        raise ValueError(
            f"{where}: {text!r} is not a UTC date/time (YYYY-MM-DD or YYYY-MM-DD HH:MM)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return epoch_ms(moment)
