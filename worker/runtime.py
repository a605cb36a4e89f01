"""The worker's runtime: everything one worker process keeps between shards, built once from its
Settings when the process starts (Celery's ``worker_process_init``, in the pool child, after the fork)
and never read from the environment afterwards:

- ``jobs``: the registry (ascent's jobs and those ``ASCENT_JOBS`` names);
- ``models``: the loaded classifiers, by (model, weights, device), loaded lazily;
- ``stores``: the stores it may write to (``ASCENT_STORE`` and ``ASCENT_ALLOWED_STORES``), opened once;
- ``reader``: the source reader, confined to the input roots (``ASCENT_INPUT_ROOTS`` and the stores),
  with the limits and the .npz cache;
- the manifests of the runs it works on (written once by the producer, so safe to keep);
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

from ascent.shared.jobs.base import Job
from ascent.shared.keys import RunKeys
from ascent.shared.settings import Settings
from ascent.shared.sources import SourceReader
from ascent.shared.spec import Manifest, Shard
from ascent.shared.store import Store
from ascent.worker.attempts import RetryPolicy
from ascent.worker.faults import FaultInjector
from ascent.worker.models import ModelCache

log = logging.getLogger(__name__)
MANIFEST_CACHE_SIZE = 8


@dataclass
class WorkerRuntime:
    """See the module docstring. ``build(settings)`` makes one; ``current(settings)`` is this process's."""

    settings: Settings
    jobs: Mapping[str, Job]
    stores: Mapping[str, Store]
    reader: SourceReader
    faults: FaultInjector
    policy: RetryPolicy
    models: ModelCache = field(default_factory=ModelCache)
    _manifests: OrderedDict[tuple[str, str], dict[str, Shard]] = field(default_factory=OrderedDict)

    @classmethod
    def build(cls, settings: Settings) -> WorkerRuntime:
        """Raises InvalidInput naming the setting when the jobs, a store or the fault plan are malformed."""
        faults = FaultInjector.parse(settings.fault_inject)
        stores = {}
        for uri in (settings.store, *settings.allowed_stores):
            store = settings.open_store(uri)
            stores[store.uri] = store
        return cls(
            settings=settings,
            jobs=settings.job_registry(),
            stores=stores,
            reader=SourceReader(settings, roots=(*settings.input_roots, *stores)),
            faults=faults,
            policy=RetryPolicy.from_settings(settings),
        )

    def allowed_store(self, uri: str) -> Store | None:
        """The store named ``uri`` if this worker may write to it, else None."""
        return self.stores.get(uri)

    @property
    def store(self) -> Store:
        """The worker's own store (``ASCENT_STORE``)."""
        return next(iter(self.stores.values()))

    def planned_shard(self, store: Store, run_id: str, shard_id: str) -> Shard | None:
        """Shard ``shard_id`` as the run's manifest plans it (None when the manifest has no such shard);
        raises NotFoundInStore when the run has no manifest."""
        key = (store.uri, run_id)
        shards = self._manifests.get(key)
        if shards is None:
            manifest = Manifest.from_dict(store.get_json(RunKeys(run_id).manifest))
            shards = self._manifests[key] = {s.shard_id: s for s in manifest.shards}
            while len(self._manifests) > MANIFEST_CACHE_SIZE:
                self._manifests.popitem(last=False)
        return shards.get(shard_id)


_current: tuple[int, WorkerRuntime] | None = None
_current_lock = threading.Lock()


def current(settings: Settings) -> WorkerRuntime:
    """This process's runtime, built from ``settings`` on first use (a forked child builds its own)."""
    global _current
    with _current_lock:
        if _current is None or _current[0] != os.getpid() or _current[1].settings != settings:
            _current = (os.getpid(), WorkerRuntime.build(settings))
        return _current[1]
