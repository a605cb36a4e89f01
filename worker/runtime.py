"""The worker's runtime: everything one worker process keeps between shards, built once from its
Settings when the process starts (Celery's ``worker_process_init``, in the pool child, after the fork)
and never read from the environment afterwards:

- ``jobs``: the registry (ascent's jobs and those ``ASCENT_JOBS`` names);
- ``models``: the loaded classifiers, by (model, weights, device), loaded lazily;
- ``stores``: one store object (and S3 client) per store URI;
- ``reader``: the source reader (S3 client, pixel limit, .npz cache);
- ``faults``: the fault injector (a testing facility, empty in production);
- ``policy``: how often and when a shard is retried (``ascent.worker.attempts``).

Nothing here touches CUDA, and this module does not import torch: models load on first use.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ascent.shared.jobs.base import Job
from ascent.shared.settings import Settings
from ascent.shared.sources import SourceReader
from ascent.shared.store import Store
from ascent.worker.attempts import RetryPolicy
from ascent.worker.faults import FaultInjector

log = logging.getLogger(__name__)
MODEL_CACHE_SIZE = 4


class ModelCache:
    """The last few classifiers this process loaded, by (model, weights, device)."""

    def __init__(self, capacity: int = MODEL_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._models: OrderedDict[tuple[str, str | None, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, weights: str | None, device: Any) -> Any:
        """The frozen ``Classifier``, loaded once (raises ModelNotFound, an InvalidInput)."""
        from ascent.shared.models import load_classifier

        key = (name, weights, str(device))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            log.info("loading model %s (weights %s) on %s", name, weights or "default", device)
            model = load_classifier(name, weights=weights, device=device)
            self._models[key] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return model


@dataclass
class WorkerRuntime:
    """See the module docstring. ``build(settings)`` makes one; ``current(settings)`` is this process's."""

    settings: Settings
    jobs: Mapping[str, Job]
    reader: SourceReader
    faults: FaultInjector
    policy: RetryPolicy
    models: ModelCache = field(default_factory=ModelCache)
    _stores: dict[str, Store] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> WorkerRuntime:
        """Raises InvalidInput naming the setting when the jobs or the fault plan are malformed."""
        return cls(
            settings=settings,
            jobs=settings.job_registry(),
            reader=SourceReader(settings),
            faults=FaultInjector.parse(settings.fault_inject),
            policy=RetryPolicy.from_settings(settings),
        )

    def store(self, uri: str) -> Store:
        """The store at ``uri``, opened once per process."""
        store = self._stores.get(uri)
        if store is None:
            store = self._stores[uri] = self.settings.open_store(uri)
        return store


_current: tuple[int, WorkerRuntime] | None = None
_current_lock = threading.Lock()


def current(settings: Settings) -> WorkerRuntime:
    """This process's runtime, built from ``settings`` on first use (a forked child builds its own)."""
    global _current
    with _current_lock:
        if _current is None or _current[0] != os.getpid() or _current[1].settings != settings:
            _current = (os.getpid(), WorkerRuntime.build(settings))
        return _current[1]
