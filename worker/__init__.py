"""ascent's worker side: the Celery app (``worker.app``), one thin task (``worker.tasks``) and the plain,
Celery-free shard handler (``worker.handlers``).

Importing this package, ``worker.app`` or ``worker.tasks`` does not import torch: the producer uses the
same app configuration and the task name below to send tasks. Only ``worker.handlers`` imports torch.
"""

from __future__ import annotations

#: The one task: run every item of a shard through a job kernel. Producer and worker name it here.
RUN_SHARD_TASK = "ascent.run_shard"

#: The queue ascent's tasks go to (so a shared Redis can also serve other Celery apps).
DEFAULT_QUEUE = "ascent"
