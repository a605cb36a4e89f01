"""The ``ascent`` command (also ``python -m producer``).

    ascent run fool --images PATH --target CLASS [options]      embedded default: local Redis + workers
    ascent run saliency --images PATH [options]
    ascent run classviz --classes 76,113,... [options]
    ascent run style --content PATH... --style PATH [--style PATH...] [--preset NAME] [options]
    ascent submit JOB [same options, no --workers]              enqueue to ASCENT_BROKER_URL / --broker
    ascent status RUN_ID                                        items done / failed / pending
    ascent collect RUN_ID [--wait] [--timeout S]                summary.json, items.jsonl, report.html
    ascent worker [--concurrency N] [--queues Q]                a Celery worker for ASCENT_BROKER_URL
    ascent flower [--port P] [--address A] [--basic-auth U:P]   Flower for ASCENT_BROKER_URL
    ascent resume RUN_ID                                        re-enqueue every shard without a record

``ascent run`` with no broker configured (neither ``ASCENT_BROKER_URL`` nor ``--broker``) starts a
private Redis and ``--workers`` local worker processes, submits, shows progress, collects, prints the
summary and stops everything it started (also on Ctrl-C). With a broker it submits there and waits for
the fleet. Everything is validated before anything is started or enqueued: an invalid spec exits with
status 2 and one line naming the field. Exit 0 means the run completed (item failures are reported in
the summary, they are not fatal); 1 a run that could not complete; 130/143 interrupted.

The producer never imports torch.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producer.inputs import check_local_files, class_items, enumerate_inputs, input_uris, local_path
from producer.submit import plan_run, run_exists
from shared.catalog import MODEL_NAMES, PRECISIONS, resolve_class
from shared.errors import AscentError, InvalidInput, InvalidSpec, StoreError
from shared.spec import JOB_KINDS, STYLE_PRESETS, Item, JobSpec
from worker import DEFAULT_QUEUE

if TYPE_CHECKING:
    from producer.collector import Progress
    from shared.settings import Settings
    from shared.store import Store

PROG = "ascent"
DEFAULT_SHARD_SIZE = 16
DEFAULT_SIZES = {"fool": 224, "saliency": 224, "classviz": 224, "style": 192}
POLL_SECONDS = 0.5
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
UNTARGETED = ("none", "untargeted")


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (stopping everything started) and exit 143."""


class RunTimeout(AscentError):
    """Waiting for a run took longer than --timeout."""


# ----------------------------------------------------------------------------- argument parsing


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("run options")
    g.add_argument(
        "--model", default="squeezenet1_1", help=f"classifier: {', '.join(MODEL_NAMES)} (default %(default)s)"
    )
    g.add_argument(
        "--weights",
        help="checkpoint path (a state_dict), or DEFAULT for torchvision's pretrained "
        "weights through TORCH_HOME (the default)",
    )
    g.add_argument("--store", help="output store URI (default: ASCENT_STORE, else file://./ascent-data)")
    g.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL; unset: embedded Redis for `run`)")
    g.add_argument(
        "--shard-size",
        type=_positive_int,
        default=DEFAULT_SHARD_SIZE,
        help="items per task, run as one batch (default %(default)s)",
    )
    g.add_argument(
        "--size",
        type=_positive_int,
        help="image side (style: the content's smaller side); default 224 (style 192 or the preset's)",
    )
    g.add_argument("--run-id", help="the run's id (default: <job>-<UTC time>-<random>)")
    return p


def _run_only_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("embedded run")
    g.add_argument(
        "--workers", type=_positive_int, default=1, help="local worker processes (default %(default)s)"
    )
    g.add_argument("--timeout", type=_positive_float, help="give up waiting after this many seconds")
    return p


def _kind_options(kind: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group(f"{kind} parameters")
    if kind in ("fool", "saliency"):
        g.add_argument(
            "--images",
            nargs="+",
            action="extend",
            required=True,
            metavar="PATH",
            help="folders (recursive), .npz files (X, y) or image files",
        )
    if kind == "fool":
        g.add_argument(
            "--target",
            required=True,
            metavar="CLASS",
            help="target class: an id 0..999 or an ImageNet class name; 'none' = untargeted",
        )
        g.add_argument("--lr", type=float, help="step size (default 1.0)")
        g.add_argument("--max-iters", type=int, help="steps before giving up (default 100)")
        g.add_argument("--extra-iters", type=int, help="steps after the model is fooled (default 2)")
        g.add_argument(
            "--loss",
            choices=("score", "log_softmax"),
            help="what to ascend: the target's raw score (the reference, default) or its log-probability "
            "(fewer steps: also pushes the other classes down)",
        )
        _precision_flag(g)
    elif kind == "saliency":
        g.add_argument(
            "--loss", choices=("cross_entropy", "score"), help="what to differentiate (default cross_entropy)"
        )
    elif kind == "classviz":
        g.add_argument(
            "--classes",
            action="append",
            required=True,
            metavar="C1,C2,...",
            help="class ids or names, comma-separated (repeatable)",
        )
        g.add_argument("--iters", type=int, help="steps (default 100)")
        g.add_argument("--lr", type=float, help="step size (default 25)")
        g.add_argument("--l2-reg", type=float, help="L2 regularisation (default 1e-3)")
        g.add_argument("--jitter", type=int, help="random shift in pixels per step (default 16)")
        g.add_argument("--blur-every", type=int, help="blur every N steps, 0 = never (default 10)")
        g.add_argument("--blur-sigma", type=float, help="blur sigma (default 0.5)")
        g.add_argument("--seed", type=int, help="noise seed (default 0)")
        _precision_flag(g)
    elif kind == "style":
        g.add_argument(
            "--content",
            nargs="+",
            action="extend",
            required=True,
            metavar="PATH",
            help="content images: folders, .npz files or image files",
        )
        g.add_argument(
            "--style",
            action="append",
            required=True,
            metavar="PATH",
            help="style image (repeat to blend several)",
        )
        g.add_argument("--style-blend", type=_float_list, metavar="W1,W2,...", help="one weight per --style")
        g.add_argument(
            "--preset", choices=sorted(STYLE_PRESETS), help="size and loss settings of a named preset"
        )
        g.add_argument("--style-size", type=int, help="style images' smaller side (default 512)")
        g.add_argument("--iters", type=int, help="optimisation steps (default 200)")
        g.add_argument("--lr", type=float, help="Adam step size (default 3.0)")
        g.add_argument("--decayed-lr", type=float, help="step size from --decay-at on (default 0.1)")
        g.add_argument("--decay-at", type=int, help="iteration where the step size drops (default 180)")
        g.add_argument("--content-layer", type=int, help="feature layer of the content loss (default 3)")
        g.add_argument("--content-weight", type=float, help="content loss weight (default 5e-2)")
        g.add_argument(
            "--style-layers", type=_int_list, metavar="L1,L2,...", help="feature layers (default 1,4,6,7)"
        )
        g.add_argument(
            "--style-weights",
            type=_float_list,
            metavar="W1,W2,...",
            help="one weight per style layer (default 20000,500,12,1)",
        )
        g.add_argument("--tv-weight", type=float, help="total-variation weight (default 5e-2)")
        g.add_argument("--init", choices=("content", "noise"), help="start image (default content)")
        g.add_argument("--seed", type=int, help="noise seed (default 0)")
        _precision_flag(g)
    return p


def _precision_flag(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="float32 (the reference, default) or bf16 autocast of the network while stepping: faster on "
        "GPUs and on CPUs with AMX/AVX512-BF16 (docs/benchmarks.md); results differ slightly",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Batch gradient ascent on input images: adversarial images, saliency maps, "
        "class visualisations and style transfer, through a Redis/Celery queue.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options()
    run_only = _run_only_options()

    run = commands.add_parser("run", help="run a job to completion (embedded Redis and workers by default)")
    run_jobs = run.add_subparsers(dest="job", metavar="JOB", required=True)
    submit = commands.add_parser("submit", help="enqueue a job to the configured broker; prints the run id")
    submit_jobs = submit.add_subparsers(dest="job", metavar="JOB", required=True)
    for kind in JOB_KINDS:
        kind_opts = _kind_options(kind)
        run_jobs.add_parser(kind, parents=[kind_opts, common, run_only], help=f"run a {kind} job")
        submit_jobs.add_parser(kind, parents=[kind_opts, common], help=f"submit a {kind} job")

    status = commands.add_parser("status", help="items done, failed and pending of a run")
    status.add_argument("run_id", metavar="RUN_ID")
    status.add_argument("--store", help="store URI (default: ASCENT_STORE)")

    collect = commands.add_parser(
        "collect", help="write summary.json, items.jsonl, report.html; print the summary"
    )
    collect.add_argument("run_id", metavar="RUN_ID")
    collect.add_argument("--store", help="store URI (default: ASCENT_STORE)")
    collect.add_argument(
        "--wait", action="store_true", help="wait (with a progress bar) until every item is recorded"
    )
    collect.add_argument(
        "--timeout", type=_positive_float, help="with --wait: give up after this many seconds"
    )
    collect.add_argument(
        "--presign", type=_positive_int, metavar="SECONDS", help="presigned URLs (s3:// stores)"
    )

    worker = commands.add_parser("worker", help="run a Celery worker for the configured broker")
    worker.add_argument("--concurrency", type=_positive_int, default=1, help="pool processes (one per GPU)")
    worker.add_argument(
        "--queues", default=DEFAULT_QUEUE, help="comma-separated queues (default %(default)s)"
    )
    worker.add_argument("-n", "--name", help="worker node name, unique per machine (default celery@<host>)")
    worker.add_argument("--loglevel", default="INFO", help="log level (default %(default)s)")
    worker.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL)")
    worker.add_argument("--store", help="store URI (default: ASCENT_STORE)")
    flower = commands.add_parser("flower", help="Flower (the Celery monitor) for the configured broker")
    flower.add_argument("--port", type=_positive_int, default=5555, help="HTTP port (default %(default)s)")
    flower.add_argument("--address", default="127.0.0.1", help="address to listen on (default %(default)s)")
    flower.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        help="HTTP basic auth (default: ASCENT_FLOWER_BASIC_AUTH); required on a non-loopback address",
    )
    flower.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL)")

    resume = commands.add_parser(
        "resume",
        help="re-enqueue every shard of a run that has no record in the store (after a broker restart, "
        "lost workers or a producer crash); safe to repeat, also while workers run",
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL)")
    resume.add_argument("--store", help="store URI (default: ASCENT_STORE)")
    return parser


# ----------------------------------------------------------------------------- building a job


@dataclass(frozen=True)
class Job:
    """A validated spec, its items and shard plan, and the store it will be recorded in."""

    spec: JobSpec
    items: list[Item]
    shard_size: int
    manifest: dict[str, Any]
    store: Store


def load_settings(args: argparse.Namespace) -> Settings:
    from shared.settings import Settings

    return Settings.from_env().with_overrides(
        broker=getattr(args, "broker", None), store=getattr(args, "store", None)
    )


def default_run_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def _resolve(value: str, field: str) -> int:
    try:
        return resolve_class(value)
    except InvalidSpec:
        raise
    except InvalidInput as exc:
        raise InvalidSpec(field, str(exc)) from None


def _set(params: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        params[name] = value


def job_params(args: argparse.Namespace) -> tuple[dict[str, Any], int | None]:
    """The spec's params from the flags (only those given: the spec fills defaults), and a size default."""
    kind = args.job
    params: dict[str, Any] = {}
    size: int | None = None
    if kind == "fool":
        target = args.target.strip()
        params["target"] = None if target.lower() in UNTARGETED else _resolve(target, "params.target")
        _set(params, "lr", args.lr)
        _set(params, "max_iters", args.max_iters)
        _set(params, "extra_iters", args.extra_iters)
        _set(params, "loss", args.loss)
        _set(params, "precision", args.precision)
    elif kind == "saliency":
        _set(params, "loss", args.loss)
    elif kind == "classviz":
        names = [c.strip() for chunk in args.classes for c in chunk.split(",") if c.strip()]
        if not names:
            raise InvalidSpec("params.classes", "no classes given")
        params["classes"] = [_resolve(c, "params.classes") for c in names]
        for name in ("iters", "lr", "l2_reg", "jitter", "blur_every", "blur_sigma", "seed", "precision"):
            _set(params, name, getattr(args, name))
    elif kind == "style":
        if args.preset:
            preset = dict(STYLE_PRESETS[args.preset])
            size = preset.pop("size", None)
            params.update(preset)
        params["style"] = input_uris(args.style, "params.style")
        check_local_files(params["style"], "params.style")
        for name in (
            "style_blend",
            "style_size",
            "iters",
            "lr",
            "decayed_lr",
            "decay_at",
            "content_layer",
            "content_weight",
            "style_layers",
            "style_weights",
            "tv_weight",
            "init",
            "seed",
            "precision",
        ):
            _set(params, name, getattr(args, name))
    return params, size


def prepare_job(args: argparse.Namespace, settings: Settings, *, local_weights: bool) -> Job:
    """Validate everything and plan the shards; starts and writes nothing. Raises InvalidInput/InvalidSpec.

    ``local_weights``: the checkpoint must exist here (embedded runs); otherwise a missing path is only
    noted, since remote workers may have it."""
    kind = args.job
    params, preset_size = job_params(args)
    weights = args.weights
    if weights is not None and weights not in ("DEFAULT", "random"):
        path = local_path(weights, "weights")
        if not path.is_file():
            if local_weights:
                raise InvalidSpec("weights", f"checkpoint {path} does not exist")
            print(
                f"{PROG}: note: --weights {path} does not exist here; the workers must have it",
                file=sys.stderr,
            )
        weights = str(path)
    store = settings.open_store()
    paths = args.content if kind == "style" else getattr(args, "images", None) or []
    spec = JobSpec(
        kind=kind,
        run_id=args.run_id or default_run_id(kind),
        store=store.uri,
        model=args.model,
        weights=weights,
        params=params,
        inputs=tuple(input_uris(paths)),
        size=args.size or preset_size or DEFAULT_SIZES[kind],
    ).validate()
    items = (
        class_items(params["classes"]) if kind == "classviz" else enumerate_inputs(paths, settings=settings)
    )
    manifest = plan_run(spec, items, args.shard_size)
    if run_exists(store, spec.run_id):
        raise InvalidSpec(
            "run_id", f"run {spec.run_id!r} already exists in {store.uri}; choose another --run-id"
        )
    return Job(spec=spec, items=items, shard_size=args.shard_size, manifest=manifest, store=store)


# ----------------------------------------------------------------------------- waiting and printing


def wait_for_run(
    store: Store,
    run_id: str,
    *,
    check: Callable[[], None] | None = None,
    timeout: float | None = None,
    poll: float = POLL_SECONDS,
) -> Progress:
    """Poll the store's records with a progress bar until every item is recorded.

    ``check`` runs each round (the embedded cluster raises there when a worker died). Raises RunTimeout."""
    from tqdm import tqdm

    from producer.collector import progress

    started = time.monotonic()
    state = progress(store, run_id)
    with tqdm(
        total=state.total,
        unit="item",
        desc=run_id,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 5.0,
    ) as bar:
        while True:
            bar.update(state.finished - bar.n)
            if state.failed:
                bar.set_postfix(failed=state.failed, refresh=False)
            if state.complete:
                return state
            if timeout is not None and time.monotonic() - started > timeout:
                raise RunTimeout(
                    f"run {run_id}: {state.pending} of {state.total} items still pending after {timeout:g}s "
                    f"(see `{PROG} status {run_id}`)"
                )
            if check is not None:
                check()
            time.sleep(poll)
            state = progress(store, run_id)


def print_progress(state: Progress) -> None:
    counts = f"{state.total} items, {state.done} done, {state.failed} failed, {state.pending} pending"
    print(f"run {state.run_id}: {counts}")
    for worker, n in state.workers.items():
        print(f"  {worker}: {n} items")


def _note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- commands


def cmd_resume(args: argparse.Namespace) -> int:
    """Compare the run's manifest with the records in the store; re-enqueue the shards without one."""
    from producer.submit import resume
    from shared.settings import redact_url
    from worker.app import create_app

    settings = load_settings(args)
    if not settings.broker_url:
        raise InvalidInput("no broker configured: set ASCENT_BROKER_URL or pass --broker redis://HOST:6379/0")
    store = settings.open_store()
    app = create_app(settings)
    try:
        missing, total = resume(store, args.run_id, app)
    finally:
        app.close()
    print(
        f"run {args.run_id}: re-enqueued {len(missing)} of {total} shards to "
        f"{redact_url(settings.broker_url)} ({total - len(missing)} already recorded)"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from producer.collector import collect, format_summary
    from producer.submit import submit

    settings = load_settings(args)
    job = prepare_job(args, settings, local_weights=not settings.broker_url)
    spec = job.spec
    n_shards = len(job.manifest["shards"])
    if settings.broker_url:
        from worker.app import create_app

        app = create_app(settings)
        try:
            submit(spec, job.items, job.shard_size, job.store, app, note=_note)
            _note(f"submitted run {spec.run_id}: {len(job.items)} items in {n_shards} shards; waiting")
            wait_for_run(job.store, spec.run_id, timeout=args.timeout)
        finally:
            app.close()
    else:
        from producer.embedded import Embedded

        _note(f"starting an embedded Redis and {args.workers} local worker(s)")
        with Embedded(settings, workers=args.workers) as cluster:
            _note(f"embedded Redis at {cluster.broker_url}, {args.workers} worker(s) ready")
            submit(spec, job.items, job.shard_size, job.store, cluster.app, note=_note)
            _note(f"run {spec.run_id}: {len(job.items)} items in {n_shards} shards")
            wait_for_run(job.store, spec.run_id, check=cluster.check_workers, timeout=args.timeout)
        _note("stopped the embedded Redis and workers")
    summary = collect(job.store, spec.run_id)
    print(format_summary(summary))
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from producer.submit import submit
    from shared.settings import redact_url
    from worker.app import create_app

    settings = load_settings(args)
    if not settings.broker_url:
        raise InvalidInput(
            "no broker configured: set ASCENT_BROKER_URL or pass --broker redis://HOST:6379/0 "
            f"(`{PROG} run` starts a local one)"
        )
    job = prepare_job(args, settings, local_weights=False)
    app = create_app(settings)
    try:
        submit(job.spec, job.items, job.shard_size, job.store, app, note=_note)
    finally:
        app.close()
    print(
        f"submitted {len(job.items)} items in {len(job.manifest['shards'])} shards to "
        f"{redact_url(settings.broker_url)}; results in {job.store.uri}"
    )
    print(job.spec.run_id)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from producer.collector import progress

    store = load_settings(args).open_store()
    print_progress(progress(store, args.run_id))
    return EXIT_OK


def cmd_collect(args: argparse.Namespace) -> int:
    from producer.collector import collect, format_summary

    store = load_settings(args).open_store()
    code = EXIT_OK
    if args.wait:
        try:
            wait_for_run(store, args.run_id, timeout=args.timeout)
        except RunTimeout as exc:
            _note(f"{exc}; collecting what is recorded")
            code = EXIT_FAILED
    print(format_summary(collect(store, args.run_id, presign=args.presign)))
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    """A prefork Celery worker with our app and these settings, one per GPU. This process never touches
    CUDA: it imports torch (``worker_init``) and forks its pool; each pool process picks its device
    when its first shard arrives, within the ``CUDA_VISIBLE_DEVICES`` it inherited (REFERENCE §4.4)."""
    from worker.app import create_app

    settings = load_settings(args)
    if not settings.broker_url:
        raise InvalidInput("no broker configured: set ASCENT_BROKER_URL or pass --broker redis://HOST:6379/0")
    _note(f"worker with {settings!r}")  # repr hides passwords; AWS keys are never in Settings
    app = create_app(settings)
    argv = [
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(args.concurrency),
        "--queues",
        args.queues,
        "--loglevel",
        args.loglevel,
    ]
    if args.name:
        argv += ["--hostname", args.name]
    app.worker_main(argv)
    return EXIT_OK


def is_loopback(address: str) -> bool:
    """True for an address only this machine can reach (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    import ipaddress

    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # "" (every interface) or a host name: treated as reachable from elsewhere


def _check_basic_auth(value: str, where: str) -> str:
    pairs = [pair.split(":", 1) for pair in value.split(",")]
    if not all(len(pair) == 2 and pair[0] and pair[1] for pair in pairs):
        raise InvalidInput(
            f"{where}: must be USER:PASSWORD (comma-separated for several users), both non-empty"
        )
    return value


def cmd_flower(args: argparse.Namespace) -> int:
    """Flower against our broker, in this process. Never unauthenticated on a non-loopback address
    (REFERENCE §4.10). Secrets reach Flower through the environment and the app's configuration, not
    through an argument list that ``ps`` shows: the broker URL is the app's, basic auth goes in
    ``FLOWER_BASIC_AUTH``, which Flower reads itself."""
    import os

    from shared.settings import redact_url
    from worker.app import create_app

    settings = load_settings(args)
    if not settings.broker_url:
        raise InvalidInput("no broker configured: set ASCENT_BROKER_URL or pass --broker redis://HOST:6379/0")
    if args.basic_auth:
        auth: str | None = _check_basic_auth(args.basic_auth, "--basic-auth")
    elif settings.flower_basic_auth:
        auth = _check_basic_auth(settings.flower_basic_auth, "ASCENT_FLOWER_BASIC_AUTH")
    else:
        auth = None
    if not auth and not is_loopback(args.address):
        raise InvalidInput(
            f"refusing to serve Flower on {args.address or 'every address'} without authentication: pass "
            "--basic-auth USER:PASSWORD or set ASCENT_FLOWER_BASIC_AUTH (or listen on 127.0.0.1)"
        )
    if auth:
        os.environ["FLOWER_BASIC_AUTH"] = auth
    else:
        # Without auth Flower's API answers 401 unless FLOWER_UNAUTHENTICATED_API is set; its pages stay
        # open, which is why this only happens on a loopback address.
        os.environ.pop("FLOWER_BASIC_AUTH", None)
        _note("Flower without authentication: only this machine can reach it; its API answers 401")
    _note(
        f"Flower for {redact_url(settings.broker_url)} on http://{args.address}:{args.port}/ "
        f"({'basic auth' if auth else 'no auth'}); /metrics and /healthcheck answer without auth"
    )
    app = create_app(settings)
    try:
        app.start(["flower", f"--port={args.port}", f"--address={args.address}"])
    except OSError as exc:  # before anything started: the port is taken, the address is not ours
        raise AscentError(
            f"Flower cannot listen on {args.address}:{args.port}: {exc.strerror or exc}"
        ) from None
    # Flower has stopped serving (SIGTERM, Ctrl-C). Leave at once: when the broker is gone, Flower's pool
    # threads retry their broadcasts for ever, and a normal exit would wait for them (a SIGTERM that
    # never ends the process). Flower keeps no state to save.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "submit": cmd_submit,
    "status": cmd_status,
    "collect": cmd_collect,
    "worker": cmd_worker,
    "flower": cmd_flower,
    "resume": cmd_resume,
}


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 run failed, 2 invalid, 130/143 interrupted)."""
    args = build_parser().parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    try:
        return COMMANDS[args.command](args)
    except InvalidInput as exc:
        _note(f"error: {exc}")
        return EXIT_USAGE
    except (AscentError, StoreError) as exc:
        _note(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _note("interrupted; everything this command started has been stopped")
        return EXIT_SIGINT
    except Terminated:
        _note("terminated; everything this command started has been stopped")
        return EXIT_SIGTERM


if __name__ == "__main__":
    sys.exit(main())
