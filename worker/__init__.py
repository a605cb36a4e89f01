"""ascent's worker side: the Celery app (``ascent.worker.app``), one thin task (``ascent.worker.tasks``)
over the plain, Celery-free shard handler (``ascent.worker.handler``), the per-process runtime
(``ascent.worker.runtime``), attempts and retries (``ascent.worker.attempts``) and the test-only fault
injector (``ascent.worker.faults``). ``python -m ascent.worker`` starts a worker.

Importing this package, ``app`` or ``tasks`` does not import torch; the handler does.
"""
