"""Which settings changed: each result fingerprint's settings are recorded readably in the state
dir (``settings/<fingerprint>.json``), so a run whose fingerprint differs from the one the output
holds can name the settings that differ, with their values before and now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.files import write_json_atomic
from chunkflow.state.run_state import RunState


def record_settings(plan: RunPlan) -> Path:
    """Record the plan's fingerprinted settings (``Settings.result_settings``), unless they are
    recorded already."""
    path = RunState.of(plan).settings_record()
    if not path.exists():
        write_json_atomic(path, plan.settings.result_settings(plan.model_sha256, plan.input_volume))
    return path


def recorded_settings(state: RunState, fingerprint: str) -> dict[str, Any] | None:
    """The settings recorded for ``fingerprint``; None when none are (or not readable)."""
    try:
        recorded = json.loads(state.settings_record(fingerprint).read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key before → now`` for each dotted key whose value differs, sorted by key."""
    keys = sorted(set(before) | set(now))
    return [
        f"{key} {_show(before.get(key))} → {_show(now.get(key))}"
        for key in keys
        if before.get(key) != now.get(key)
    ]


def change_note(plan: RunPlan, held: str) -> str:
    """One line saying which settings changed since the output was made with fingerprint
    ``held`` (another than the plan's), so that every block is computed again."""
    what = f"settings changed since the output was made (fingerprint {held} → {plan.fingerprint})"
    state = RunState.of(plan)
    before = recorded_settings(state, held)
    if before is None:
        where = state.settings_record(held)
        unknown = f"which ones is not recorded ({where} does not exist)"
        return f"{what}; {unknown}; every block will be computed"
    changed = differences(
        before, plan.settings.result_settings(plan.model_sha256, plan.input_volume)
    )
    return f"{what}: {'; '.join(changed) or 'none recorded'}; every block will be computed"
