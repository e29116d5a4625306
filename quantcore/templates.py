"""File-name templates of the config (``data/{symbol}_{interval}.csv``): what they may say.

Only the plain fields ``{symbol}``, ``{interval}`` and ``{venue}`` are allowed. Python's
format language would accept ``{symbol.upper}`` (a method's address in the file name, a
new file on every restart), ``{symbol!r}`` or ``{symbol:>30}``; none of those names a
stable file, so they are refused with one line naming the field and the value.
"""

from __future__ import annotations

import inspect
import os
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quantcore.config_schema import AppConfig

FIELDS = ("symbol", "interval", "venue")


class TemplateError(ValueError):
    """A template that cannot name a stable file; ``str()`` is the one-line reason."""


def check_template(template: str, where: str, fields: Sequence[str] = FIELDS) -> None:
    """TemplateError naming ``where`` and the value unless every ``{...}`` is a bare
    allowed field (``{{`` and ``}}`` stay literal braces)."""
    allowed = ", ".join(f"{{{name}}}" for name in fields)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"{where}: {template!r}: {exc} (allowed: {allowed})") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in fields or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            raise TemplateError(
                f"{where}: {template!r}: {shown} is not allowed; a file name may use only {allowed}"
            )


@dataclass(frozen=True, slots=True)
class FileUse:
    """One stream written to one file by one consumer (for :func:`shared_file`)."""

    file: str
    """The path as the process will open it (relative paths against the working folder)."""
    shown: str
    """The path as the template produced it, for the message."""
    field: str
    template: str
    stream: str
    """``streams[2] (BTCUSDT 1m)``."""


def shared_file(uses: Iterable[FileUse]) -> str | None:
    """One line naming the first file two writers would share (two streams of one
    consumer, or two consumers), else None; two writers on one file corrupt it."""
    seen: dict[str, FileUse] = {}
    for use in uses:
        first = seen.setdefault(use.file, use)
        if first is use:
            continue
        if first.field == use.field:
            return (
                f"{use.field}: {use.template!r} maps {first.stream} and {use.stream} to one "
                f"file, {use.shown}; make the template tell them apart"
            )
        return (
            f"{first.field} and {use.field} both write {use.shown} "
            f"({first.stream}, {use.stream}); give each its own path"
        )
    return None


def resolved(path: str) -> str:
    """The absolute, normalized path: relative paths resolve against the working folder."""
    return os.path.normpath(os.path.abspath(path))


def csv_file_clash(parts: Sequence[AppConfig]) -> str | None:
    """One line when two streams, or two CSV consumers, of these configs (one per venue)
    would write one file (two writers corrupt it; the lock would blame ourselves)."""
    return shared_file(use for part in parts for use in _csv_uses(part))


def _csv_uses(part: AppConfig) -> Iterator[FileUse]:
    from quantcore.consumers.csv_recorder import CsvRecorder

    default = inspect.signature(CsvRecorder).parameters["path"].default
    for spec in part.consumers:
        if issubclass(spec.cls, CsvRecorder):
            template = str(spec.params.get("path", default))
            for (symbol, interval), where in zip(part.streams, part.stream_fields, strict=True):
                shown = template.format(symbol=symbol, interval=interval)
                stream = f"{where} ({symbol} {interval})"
                field = f"{spec.where}.params.path"
                yield FileUse(resolved(shown), shown, field, template, stream)
