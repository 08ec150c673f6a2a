"""The app's way into the storage: one opened storage and one `Control` per study.

These are connections (engines and their pools) and Optuna's cache of
finished trials (which never change), not state: every page asks them for
fresh data on every poll, so two app processes on one storage show the same
thing and a restart loses nothing.
"""

from __future__ import annotations

import threading

import optuna

from steer.control import Control
from steer.errors import UserError
from steer.storage import open_storage, resolve_study_name


class Studies:
    def __init__(self, storage_url: str, default: str | None = None) -> None:
        self.storage: optuna.storages.RDBStorage = open_storage(storage_url, must_exist=True, heartbeat=False)
        self._controls: dict[str, Control] = {}
        self._studies: dict[str, optuna.Study] = {}
        self._lock = threading.Lock()
        self.default = default
        if default is not None:
            self.resolve(default)  # an unknown --study fails at start, not on the first page

    def names(self) -> list[str]:
        return sorted(s.study_name for s in self.storage.get_all_studies())

    def resolve(self, name: str | None) -> str:
        """`name`, else the app's study, else the storage's only study; UserError if none fits."""
        return resolve_study_name(self.storage, name or self.default)

    def control(self, name: str) -> Control:
        with self._lock:
            control = self._controls.get(name)
            if control is None:
                control = Control.open(self.storage, name)
                self._controls[name] = control
            return control

    def study(self, name: str) -> optuna.Study:
        """The Optuna study, kept so that its storage cache spares re-reading finished trials every poll."""
        with self._lock:
            if name not in self._studies:
                self._studies[name] = optuna.load_study(study_name=name, storage=self.storage)
            return self._studies[name]
