"""What a job is: one class per job module, an instance of it in the registry (``ascent.shared.jobs``).

A job says what is particular to it; everything else (spec validation, CLI options, the worker's
loading, writing and recording, the collector and the report shell) is generic and reads these:

- ``name``, ``help``, ``Params`` (a ``JobParams`` dataclass), ``inputs`` (the flag that names its
  input images, or None for a job that reads none), ``default_size``, ``presets``;
- ``plan_items``: the run's items from the inputs (a job without inputs makes its own);
- worker side: ``load`` (one item's input, default: the image resized and centre-cropped to the
  spec's size) and ``run`` (the kernel on the shard's loaded items as one batch, giving one
  ``Outcome`` per item: its result fields and output image);
- collector side: ``summarize`` (the job's summary.json fields), ``summary_lines`` (terminal),
  ``headline`` (report cards), ``report_sections`` and ``tile`` (the report's image grid).

Job modules are imported by the producer, which has no torch: import torch and the kernels inside
``run``, never at module level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ascent.shared import html
from ascent.shared.catalog import ClassCatalog
from ascent.shared.codecs import PNG, SaveFormat
from ascent.shared.images import resize_center_crop
from ascent.shared.limits import Limits
from ascent.shared.params import JobParams
from ascent.shared.spec import Item, JobSpec
from ascent.shared.stats import finite

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class InputFlag:
    """The command-line flag that names a job's input images (``--images``), and its help."""

    name: str
    help: str

    @property
    def flag(self) -> str:
        return f"--{self.name}"


IMAGES = InputFlag("images", "folders (recursive), .npz files (X, y) or image files")


@dataclass(frozen=True)
class Loaded:
    """An item ready for the kernel: ``image`` H×W×3 uint8 as the kernel sees it (None for jobs that
    read no image); ``label`` the item's true class, from the manifest or the source (.npz ``y``)."""

    item: Item
    image: np.ndarray | None
    label: int | None


@dataclass(frozen=True)
class Outcome:
    """A finished item: its result fields (JSON values), the output image (H×W×3 or H×W uint8, stored
    as ``outputs/<item_id>.png``) and optionally the input as the kernel saw it (``inputs/<item_id>.png``)."""

    item: Item
    result: Mapping[str, Any]
    output: np.ndarray | None
    input: np.ndarray | None = None


def prediction_entry(
    row: Mapping[str, Any], classes: ClassCatalog, class_field: str, name_field: str
) -> dict[str, Any]:
    """A done row as summary.json lists it for jobs that classify: the class it is about, the
    prediction, both with names, the score and the output."""
    return {
        "item_id": row["item_id"],
        class_field: row.get(class_field),
        name_field: classes.name(row.get(class_field)),
        "pred": row.get("pred"),
        "pred_name": classes.name(row.get("pred")),
        "score": finite(row.get("score")),
        "output": row.get("output"),
    }


def images_of(batch: Sequence[Loaded]) -> list[np.ndarray]:
    """The images of a batch of a job that reads images (every ``Loaded.image`` is set)."""
    images = [x.image for x in batch]
    if any(image is None for image in images):
        raise ValueError("images_of: an item of this batch has no image")
    return [image for image in images if image is not None]


class WorkContext(Protocol):
    """What the worker hands a job while it runs a shard (``ascent.worker.handler.ShardContext``)."""

    spec: JobSpec
    model: Any  # ascent.shared.models.Classifier
    device: Any  # torch.device

    @property
    def limits(self) -> Limits:
        """The worker's limits (its settings: ``ASCENT_MAX_*``), for data a job reads other than by ``read_image``."""
        ...

    def read_image(self, uri: str) -> tuple[np.ndarray, int | None]:
        """The image at ``uri`` (H×W×3 uint8) and its label from an .npz, within the worker's limits."""
        ...

    def put_run_image(self, name: str, image: np.ndarray) -> str:
        """Store a run-level input once (``inputs/<name>.png``); returns its URI."""
        ...

    def put_item_image(self, item_id: str, name: str, image: np.ndarray) -> str:
        """Store another image of one item (``steps/<item_id>/<name>.png``); returns its URI."""
        ...

    def tensor(self, images: Sequence[np.ndarray]) -> Any:
        """Same-shape H×W×3 uint8 arrays -> N×3×H×W float32 in [0, 1] on the model's device."""
        ...

    def read_stored(self, key: str) -> bytes | None:
        """The bytes under ``key`` in the worker's own store (``ascent.shared.keys``), None if absent."""
        ...

    def classifier(
        self, model: str, weights: str | None, mean: Sequence[float] | None, std: Sequence[float] | None
    ) -> Any:
        """Another classifier (``--model`` syntax) on this device, loaded once per worker process."""
        ...


class Media(Protocol):
    """The run's stored images, for the report (``ascent.producer.report.RunMedia``)."""

    def input(self, name: str) -> bytes | None: ...

    def output(self, item_id: str) -> bytes | None: ...

    def run_inputs(self, prefix: str) -> list[bytes | None]: ...

    def item_image(self, item_id: str, name: str) -> bytes | None: ...


class Job:
    """Base of every job (see the module docstring). Subclasses set the class attributes and override
    ``run``; the collector-side methods have sensible defaults."""

    name: ClassVar[str]
    help: ClassVar[str]
    Params: ClassVar[type[JobParams]]
    inputs: ClassVar[InputFlag | None] = IMAGES
    default_size: ClassVar[int] = 224
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: A result field that repeats the output's URI (saliency's ``saliency``), or None.
    output_field: ClassVar[str | None] = None
    #: The result fields an exported dataset carries per item (``ascent export``: labels.csv columns,
    #: npz arrays, webdataset json).
    export_fields: ClassVar[tuple[str, ...]] = ()
    #: The job's main rate for the default ``summary_lines`` and ``headline``: summary keys of the
    #: rate and its counts k of n, and a text with ``{}`` where "k/n" goes, or None.
    headline_rate: ClassVar[tuple[str, str, str, str] | None] = None
    #: Whether ``ascent run`` / ``ascent submit`` offer it (False: a command of its own plans it).
    standalone: ClassVar[bool] = True
    #: Whether it runs a kernel on the one ascent loop (the kernel contract test covers those).
    ascends: ClassVar[bool] = True

    def __repr__(self) -> str:
        return f"<job {self.name}>"

    # ----------------------------------------------------------------------------- producer

    def plan_items(self, params: JobParams, items: list[Item]) -> list[Item]:
        """The run's items; ``items`` are those enumerated from the inputs (empty without inputs)."""
        return items

    def plan_run_items(self, spec: JobSpec, items: list[Item]) -> list[Item]:
        """``plan_items`` with the whole validated spec (the model's class count); what the producer calls."""
        return self.plan_items(spec.params, items)

    # ----------------------------------------------------------------------------- worker

    def load(self, ctx: WorkContext, item: Item) -> Loaded:
        """Read and prepare one item; raise InvalidInput (that item fails) or TransientError."""
        image, source_label = ctx.read_image(item.source)
        label = item.label if item.label is not None else source_label
        return Loaded(item, self.prepare(image, ctx.spec), label)

    def prepare(self, image: np.ndarray, spec: JobSpec) -> np.ndarray:
        """A decoded image (H×W×3 uint8) as the kernel sees it: resized and centre-cropped to the size."""
        assert spec.size is not None
        return resize_center_crop(image, spec.size)

    def run(self, ctx: WorkContext, batch: Sequence[Loaded]) -> list[Outcome]:
        """The kernel on the loaded items as one batch; one Outcome per item, in order."""
        raise NotImplementedError

    def output_format(self, params: JobParams) -> SaveFormat:
        """How the outputs are stored (``outputs/<item_id>.<ext>``); default PNG, 8-bit exact."""
        return PNG

    # ----------------------------------------------------------------------------- collector

    def exported(self, row: Mapping[str, Any]) -> bool:
        """Whether ``ascent export`` takes a done item without ``--all`` (default: every done item)."""
        return True

    def summarize(self, spec: JobSpec, rows: list[dict[str, Any]], classes: ClassCatalog) -> dict[str, Any]:
        """The job's fields of summary.json from the run's rows (one per item; status done, failed or
        pending; a done row holds the item's result fields)."""
        return {}

    def stops_early(self, spec: JobSpec) -> bool:
        """Whether workers ask ``stop_reason`` before each shard (it reads the run's finished records)."""
        return False

    def stop_reason(self, spec: JobSpec, rows: Sequence[Mapping[str, Any]]) -> str | None:
        """Why the remaining shards need not run, from the finished rows of the run (None: run them);
        their items are then recorded ``skipped`` with this reason."""
        return None

    def run_files(self, summary: Mapping[str, Any]) -> Mapping[str, Any]:
        """Extra JSON files the collector writes beside summary.json (name -> content), from the summary."""
        return {}

    def summary_lines(self, summary: Mapping[str, Any]) -> list[str]:
        """The job's lines of the terminal summary (default: ``headline_rate``, e.g. "top-1 correct 1/2
        labelled (50.0%)")."""
        if self.headline_rate is None:
            return []
        rate, k, n, text = self.headline_rate
        return [text.format(f"{summary[k]}/{summary[n]}") + f" ({html.pct(summary[rate])})"]

    def headline(self, summary: Mapping[str, Any]) -> list[html.Card]:
        """Cards before the run's counts, the first may be ``big`` (default: ``headline_rate``)."""
        if self.headline_rate is None:
            return []
        rate, k, n, text = self.headline_rate
        return [html.Card(html.pct(summary[rate]), text.format(f"{summary[k]} of {summary[n]}"), big=True)]

    def report_sections(self, summary: Mapping[str, Any], classes: ClassCatalog) -> list[str]:
        """HTML sections after the headline."""
        return []

    def media_sections(self, summary: Mapping[str, Any], media: Media, classes: ClassCatalog) -> list[str]:
        """HTML sections with the run's images, after ``report_sections`` (style's contact sheet)."""
        return []

    def grid_context(self, media: Media) -> tuple[str, Any]:
        """(extra CSS, anything ``tile`` needs once per report), computed before the tiles."""
        return "", None

    def tile(self, row: Mapping[str, Any], media: Media, classes: ClassCatalog, shared: Any) -> str:
        """One done item in the image grid (default: its input and output, id and source)."""
        item_id = row["item_id"]
        figures = [html.figure(media.input(item_id), "input"), html.figure(media.output(item_id), "output")]
        caption = f"<b>{html.esc(item_id)}</b><br>{html.source_span(row)} {html.link(row.get('output'), 'full size')}"
        return html.tile(figures, caption)
