"""The Optuna internals steer relies on (all in `steer/storage/_optuna.py`) are there in the installed Optuna,
and the check that guards them names what a changed Optuna lacks."""

from __future__ import annotations

import importlib
import sys

import optuna
import pytest

from steer.storage import check_optuna_internals


def test_the_installed_optuna_has_every_internal_steer_uses():
    assert check_optuna_internals() == []


def test_a_missing_private_method_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delattr(optuna.storages.RDBStorage, "_get_trials")
    assert check_optuna_internals() == ["RDBStorage._get_trials is missing"]


def test_a_changed_signature_of_an_overridden_method_is_named(monkeypatch: pytest.MonkeyPatch):
    def _create_new_trial(self, study_id, template_trial=None, *, number=None):
        raise NotImplementedError

    monkeypatch.setattr(optuna.storages.RDBStorage, "_create_new_trial", _create_new_trial)
    assert check_optuna_internals() == [
        "RDBStorage._create_new_trial(study_id, template_trial) is now (study_id, template_trial, number)"
    ]


def test_a_cache_that_no_longer_keeps_its_backend_is_named(monkeypatch: pytest.MonkeyPatch):
    class _CachedStorage:
        def __init__(self, backend):
            self._inner = backend

    monkeypatch.setattr("optuna.storages._cached_storage._CachedStorage", _CachedStorage)
    assert check_optuna_internals() == ["_CachedStorage.__init__ no longer sets `_backend`"]


def test_a_missing_trial_column_is_named(monkeypatch: pytest.MonkeyPatch):
    class TrialModel:
        class __table__:  # noqa: N801 - stands in for a SQLAlchemy Table
            class c:  # noqa: N801
                @staticmethod
                def keys():
                    return ["trial_id", "number", "study_id", "state"]

    monkeypatch.setattr("optuna.storages._rdb.models.TrialModel", TrialModel)
    assert check_optuna_internals() == ["TrialModel.__table__ has no column `datetime_start`"]


def test_importing_steer_storage_with_a_changed_optuna_fails_at_once_naming_the_problems(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delattr(optuna.storages.RDBStorage, "_get_stale_trial_ids")
    monkeypatch.setattr(optuna, "__version__", "6.0.0")
    monkeypatch.delitem(sys.modules, "steer.storage._optuna")  # restored afterwards: the real module stays
    with pytest.raises(ImportError) as caught:
        importlib.import_module("steer.storage._optuna")
    message = str(caught.value)
    assert message.startswith("steer ")
    assert "relies on Optuna internals that optuna 6.0.0 changed: RDBStorage._get_stale_trial_ids is missing" \
        in message
    assert "(steer/storage/_optuna.py)" in message
