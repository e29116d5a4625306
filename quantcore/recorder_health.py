"""Recorder health: whether each recorder keeps what it is handed, for ``/health``.

A recorder (a component with a resume point: the CSV recorder, every database sink) is
unhealthy while it is failing (its storage refuses writes, or its ``on_bar`` raised),
behind (bars waiting too long, in the journal, or a missing range being filled) or
dropping bars (some will never be recorded this run). ``/health`` then answers 503 and
names it with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quantcore.component import Component
from quantcore.consumers.csv_recorder import CsvRecorder


@dataclass(frozen=True, slots=True)
class RecorderHealth:
    """One recorder's verdict; ``reason`` says what is wrong ("recording" when nothing)."""

    healthy: bool
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "reason": self.reason}


def recorder_problem(component: Component) -> str | None:
    """Why ``component`` is failing, behind or dropping bars, or None if it keeps up."""
    reason = component.problem()
    if reason is not None:
        return reason
    lost = component.unrecorded()
    if lost:
        return f"dropping bars: {lost} not recorded this run"
    if isinstance(component, CsvRecorder) and component.pending:
        return f"failing: {component.pending} bars held in memory (the file refuses writes)"
    return None


def recorders_health(components: list[Component]) -> dict[str, RecorderHealth]:
    """Every recorder among ``components`` by name, with its verdict."""
    verdicts: dict[str, RecorderHealth] = {}
    for component in components:
        if component.is_recorder:
            reason = recorder_problem(component)
            verdicts[component.name] = RecorderHealth(reason is None, reason or "recording")
    return verdicts
