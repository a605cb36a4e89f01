"""The classifiers a worker process has loaded, and how a spec's model reaches it.

A model named by a file (``--model m.pt2``, ``--weights w.pth``) reaches the worker as a URI: the
user's file in place (a shared or local file system, within the input roots) or the copy the producer
uploaded to the run's store. The worker reads it through its confined source reader, checks its
sha256 against the one the spec recorded at submit (a file that changed since is refused), keeps a
local copy of a remote one (named by its hash) for torch to load, and keeps the loaded model for the
next shards. Loading needs torch; this module imports it only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ascent.shared.catalog import model_kind
from ascent.shared.errors import InvalidInput
from ascent.shared.sources import SourceReader
from ascent.shared.spec import JobSpec
from ascent.shared.uris import parse_uri

log = logging.getLogger(__name__)
MODEL_CACHE_SIZE = 4
PRETRAINED = (None, "DEFAULT", "random")


class ModelCache:
    """The last few classifiers this process loaded, by what was asked for and the device."""

    def __init__(self, capacity: int = MODEL_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._models: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._files = Path(tempfile.gettempdir()) / f"ascent-models-{os.getuid()}"

    def get(self, name: str, weights: str | None, device: Any, **options: Any) -> Any:
        """The frozen ``Classifier``, loaded once (raises ModelNotFound, an InvalidInput). ``options`` go
        to ``load_classifier`` (mean, std)."""
        from ascent.shared.models import load_classifier

        key = (name, weights, str(device), tuple(sorted(options.items())))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            log.info("loading model %s (weights %s) on %s", name, weights or "default", device)
            model = load_classifier(name, weights=weights, device=device, **options)
            self._models[key] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return model

    def for_spec(self, spec: JobSpec, device: Any, reader: SourceReader) -> Any:
        """The classifier ``spec`` names, its files fetched and checked first."""
        model = self.fetch(spec.model, "--model", spec, reader) if model_kind(spec.model) == "file" else spec.model
        weights = spec.weights if spec.weights in PRETRAINED else self.fetch(spec.weights, "--weights", spec, reader)
        return self.get(model, weights, device, mean=spec.mean, std=spec.std)

    def fetch(self, uri: str | None, flag: str, spec: JobSpec, reader: SourceReader) -> str:
        """A local path of the file at ``uri`` whose bytes have the sha256 the spec recorded."""
        assert uri is not None
        data = reader.read(uri, limit="max_npz_bytes")  # models are large: the .npz limit (4 GiB) applies
        digest = hashlib.sha256(data).hexdigest()
        expected = spec.files.get(uri)
        if expected is not None and digest != expected:
            raise InvalidInput(f"{flag} {uri}: its sha256 is not the one recorded at submit (the file changed since)")
        parsed = parse_uri(uri, rows=False)
        if parsed.scheme == "file" and reader.roots is not None:
            local = reader.roots.check(parsed, uri)
            if local is not None:
                return str(local)
        if parsed.scheme == "file" and reader.roots is None:
            return parsed.path
        path = self._files / f"{digest}{Path(parsed.path).suffix}"
        if not path.is_file():
            self._files.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(path.suffix + f".{os.getpid()}.part")
            partial.write_bytes(data)
            partial.replace(path)
        return str(path)
