"""The documented settings match the real ones: every variable and flag is in .env.example."""

from __future__ import annotations

from pathlib import Path

from orderlog.config import env_example, env_name, markdown_table, settings_fields

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_is_the_one_derived_from_the_settings() -> None:
    # Regenerate with: python -m orderlog.config env > .env.example
    assert (ROOT / ".env.example").read_text() == env_example()


def test_env_example_lists_every_setting_with_its_flag() -> None:
    text = env_example()
    for f in settings_fields():
        assert f"{env_name(f)}=" in text, env_name(f)
        assert f.metadata["flag"] in text, f.metadata["flag"]


def test_readme_holds_the_settings_table_derived_from_the_settings() -> None:
    # Regenerate with: python -m orderlog.config table
    text = (ROOT / "README.md").read_text()
    assert markdown_table() in text


def test_readme_shows_the_two_commands_and_every_variable() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    for f in settings_fields():
        assert env_name(f) in text, env_name(f)
