"""docs/register-maps.md documents every register of every built-in profile, as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.profiles import builtin_models, builtin_profile, markdown_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "register-maps.md"


@pytest.mark.parametrize("model", builtin_models())
def test_register_map_doc_matches_the_profile(model):
    text = DOC.read_text()
    assert f"`{model}`" in text
    assert markdown_table(builtin_profile(model)) in text, f"regenerate the {model} table"
