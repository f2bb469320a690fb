"""docs/settings.md is what tools/settings_table.py makes of the settings now: a setting
added, renamed or given a new default without regenerating the table fails here."""

from __future__ import annotations

from raftmq.node.settings import OTHER_VARIABLES, NodeSettings
from tools.settings_table import MEANINGS, OTHER_MEANINGS, OUTPUT, render


def test_settings_table_is_up_to_date() -> None:
    assert OUTPUT.read_text() == render(), (
        "docs/settings.md is out of date: run .venv/bin/python tools/settings_table.py"
    )


def test_table_lists_every_setting_and_variable() -> None:
    text = OUTPUT.read_text()
    for name in NodeSettings.model_fields:
        assert f"| `{name}` | `RAFTMQ_{name.upper()}` |" in text
    for variable in OTHER_VARIABLES:
        assert f"| `{variable}` |" in text


def test_meanings_name_only_real_settings() -> None:
    assert set(MEANINGS) <= set(NodeSettings.model_fields)
    assert set(OTHER_MEANINGS) <= OTHER_VARIABLES
