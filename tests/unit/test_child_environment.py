"""The environment changes the zygote works out once and every fork child applies."""

from __future__ import annotations

import os

import pytest

from dify_sandbox.executors.zygote.child import EnvironmentChanges


def test_changes_turn_the_current_environment_into_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEP_ME", "same")
    monkeypatch.setenv("CHANGE_ME", "old")
    monkeypatch.setenv("SECRET_TOKEN", "leak")
    target = {"KEEP_ME": "same", "CHANGE_ME": "new", "ADDED": "yes"}

    changes = EnvironmentChanges.towards(target)
    assert "SECRET_TOKEN" in changes.remove
    assert dict(changes.assign) == {"CHANGE_ME": "new", "ADDED": "yes"}

    saved = dict(os.environ)
    try:
        changes.apply()
        assert dict(os.environ) == target
    finally:
        os.environ.clear()
        os.environ.update(saved)
