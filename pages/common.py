"""What every page shares: the app context and small helpers for user-facing errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from pipeline.config import Profile
from pipeline.data import DataError

# one heavy job at a time per app: a second user waits in the queue and sees their position
HEAVY = dict(concurrency_limit=1, concurrency_id="heavy")


@dataclass
class AppContext:
    profile: Profile
    data_roots: list[Path]  # typed server paths must lie under one of these
    work_dir: Path  # runs/, LoRAs, synthetic datasets, uploads live here
    default_source: str = "phantom:24"
    max_upload_mb: int = 200
    # components a page shares with later pages (e.g. "data_spec": the Data tab's current source)
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def allowed_roots(self) -> list[Path]:
        return [*self.data_roots, self.work_dir]


def user_error(exc: BaseException) -> gr.Error:
    """A clear message for the page, never a stack trace."""
    if isinstance(exc, (DataError, ValueError, FileNotFoundError)):
        return gr.Error(str(exc))
    return gr.Error(f"{type(exc).__name__}: {exc}")
