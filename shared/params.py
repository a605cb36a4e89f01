"""Typed job parameters. A job declares one frozen dataclass whose fields carry, with ``param``, their
default, a one-line help, the values they accept and their command-line form; everything else is
generic: validation with errors naming ``params.<field>``, the JSON round-trip and the CLI options.

    @dataclass(frozen=True)
    class BlurParams(JobParams):
        sigma: float = param(1.0, POSITIVE_NUMBER, "blur radius in pixels")

Sequences are tuples in Python and lists in JSON. Class ids are checked against the run's class count
by the spec (``JobParams.class_ids``); the command line accepts class names, resolved by the producer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.limits import Limits

P = TypeVar("P", bound="JobParams")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_fraction(text: str) -> float:
    """A number written as a decimal or a fraction: ``0.5``, ``8/255`` (pixel budgets are often k/255).
    Raises ValueError (argparse's "invalid value") for anything else."""
    numerator, slash, denominator = text.strip().partition("/")
    value = float(numerator) / float(denominator) if slash else float(numerator)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


parse_fraction.__name__ = "number"  # argparse names the type in its message: "invalid number value"


def _split(parse: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def split(text: str) -> list[Any]:
        return [parse(v.strip()) for v in text.split(",") if v.strip()]

    return split


@dataclass(frozen=True)
class Kind:
    """The values a parameter takes: ``check`` (the spec's validation, described by ``meaning``),
    ``parse`` (command-line text -> value, argparse's ``type``), and what the producer does with it.

    ``switch``: a boolean set by a bare flag (``--random-start``; a field whose default is True gets
    ``--no-<name>``, which sets it False). ``sequence``: a list in JSON, a tuple here. ``classes``:
    holds class ids (one, or a sequence) that the spec checks against the run's class count and the
    CLI resolves from names. ``files``: input URIs that the producer checks and uploads like
    ``--images``. ``aliases``: command-line words that stand for a value (``--target none`` for null)."""

    meaning: str
    check: Callable[[Any], bool]
    parse: Callable[[str], Any] = str
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    switch: bool = False
    sequence: bool = False
    classes: bool = False
    files: bool = False
    aliases: tuple[tuple[str, Any], ...] = ()


POSITIVE_INT = Kind("a positive integer", lambda v: _is_int(v) and v > 0, int)
NON_NEGATIVE_INT = Kind("a non-negative integer", lambda v: _is_int(v) and v >= 0, int)
POSITIVE_NUMBER = Kind("a positive number", lambda v: _is_number(v) and v > 0, float)
NON_NEGATIVE_NUMBER = Kind("a non-negative number", lambda v: _is_number(v) and v >= 0, float)
OPTIONAL_POSITIVE_FRACTION = Kind(
    "null or a positive number", lambda v: v is None or (_is_number(v) and v > 0), parse_fraction, metavar="X"
)
SWITCH = Kind("true or false", lambda v: isinstance(v, bool), switch=True)


def list_of(what: str, element: Callable[[Any], bool], parse: Callable[[str], Any], metavar: str, **flags: Any) -> Kind:
    """A non-empty sequence whose elements pass ``element``; on the command line comma-separated."""
    return Kind(
        f"a non-empty list of {what}",
        lambda v: isinstance(v, tuple) and len(v) > 0 and all(element(c) for c in v),
        _split(parse),
        metavar=metavar,
        sequence=True,
        **flags,
    )


INT_LIST = list_of("non-negative integers", lambda c: _is_int(c) and c >= 0, int, "N1,N2,...")
NUMBER_LIST = list_of("non-negative numbers", lambda c: _is_number(c) and c >= 0, float, "W1,W2,...")
FRACTION_LIST = list_of("non-negative numbers", lambda c: _is_number(c) and c >= 0, parse_fraction, "X1,X2,...")
OPTIONAL_FRACTION_LIST = dataclasses.replace(
    FRACTION_LIST, meaning="null or " + FRACTION_LIST.meaning, check=lambda v: v is None or FRACTION_LIST.check(v)
)
OPTIONAL_NUMBER_LIST = dataclasses.replace(
    NUMBER_LIST, meaning="null or " + NUMBER_LIST.meaning, check=lambda v: v is None or NUMBER_LIST.check(v)
)
CLASS_LIST = list_of("class ids", lambda c: _is_int(c) and c >= 0, str, "C1,C2,...", classes=True)
OPTIONAL_CLASS = Kind(
    "a class id, or null", lambda v: v is None or (_is_int(v) and v >= 0), str, metavar="CLASS", classes=True
)
# One path per flag (``--style a.jpg --style b.jpg``): file names may hold commas.
FILES = dataclasses.replace(
    list_of("image URIs", lambda u: isinstance(u, str) and bool(u), str, "PATH", files=True), parse=str
)


def one_of(*choices: str) -> Kind:
    return Kind(" or ".join(repr(c) for c in choices), lambda v: v in choices, str, choices=choices)


@dataclass(frozen=True)
class ParamInfo:
    """One field of a ``JobParams``: its name, default and ``param`` options."""

    name: str
    default: Any
    kind: Kind
    help: str
    required: bool
    cli_required: bool
    append: bool
    limit: str | None
    flags: tuple[tuple[str, Any, str], ...]

    def check_limit(self, value: Any, limits: Limits) -> None:
        """Raise InvalidInput when ``value`` (a number, or a sequence by its length) exceeds the limit
        named by ``limit`` (an ``ascent.shared.limits.Limits`` field)."""
        if self.limit is None or value is None:
            return
        amount = len(value) if isinstance(value, (tuple, list)) else value
        limits.check(self.limit, amount, f"params.{self.name}")

    @property
    def flag(self) -> str:
        negated = self.kind.switch and self.default is True
        return ("--no-" if negated else "--") + self.name.replace("_", "-")


def param(
    default: Any,
    kind: Kind,
    help: str,
    *,
    required: bool = False,
    cli_required: bool = False,
    append: bool = False,
    limit: str | None = None,
    flags: tuple[tuple[str, Any, str], ...] = (),
) -> Any:
    """A parameter field. ``required``: the spec must give a value (the default is only a placeholder);
    ``cli_required``: the command line must give the flag; ``append``: the flag may repeat; ``limit``:
    the ``Limits`` field that bounds it (a sequence by its length), e.g. ``"max_iters"``; ``flags``:
    other command-line flags that set it to a constant, (flag, command-line value, help), offered as
    alternatives to its own flag (``--untargeted`` for ``--target untargeted``)."""
    options = {
        "kind": kind,
        "help": help,
        "required": required,
        "cli_required": cli_required,
        "append": append,
        "limit": limit,
        "flags": flags,
    }
    return dataclasses.field(default=default, metadata={"param": options})


def _to_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _from_json(value: Any, kind: Kind) -> Any:
    return tuple(value) if kind.sequence and isinstance(value, list) else value


@dataclass(frozen=True)
class JobParams:
    """Base of every job's parameter dataclass (see the module docstring)."""

    job: ClassVar[str] = "job"

    @classmethod
    def infos(cls) -> list[ParamInfo]:
        out = []
        for f in dataclasses.fields(cls):
            options = f.metadata.get("param")
            if options is not None:
                out.append(ParamInfo(name=f.name, default=f.default, **options))
        return out

    @classmethod
    def from_dict(cls: type[P], values: Mapping[str, Any] | JobParams | None) -> P:
        """Validate ``values`` (JSON-like, missing names take their defaults); raises InvalidSpec naming
        ``params.<field>`` for an unknown name, a missing required value or an invalid one."""
        if isinstance(values, JobParams):
            values = values.to_dict()
        values = values or {}
        if not isinstance(values, Mapping):
            raise InvalidSpec("params", "must be an object")
        infos = cls.infos()
        names = [i.name for i in infos]
        for name in values:
            if name not in names:
                raise InvalidSpec(f"params.{name}", f"unknown parameter for {cls.job}; known: {', '.join(names)}")
        filled: dict[str, Any] = {}
        for info in infos:
            if info.required and values.get(info.name) is None:
                raise InvalidSpec(f"params.{info.name}", f"required: {info.kind.meaning}")
            value = _from_json(values.get(info.name, info.default), info.kind)
            if not info.kind.check(value):
                raise InvalidSpec(f"params.{info.name}", f"{value!r} is invalid: expected {info.kind.meaning}")
            filled[info.name] = value
        params = cls(**filled)
        params.check()
        return params

    def check(self) -> None:
        """Checks across fields (override); raise InvalidSpec naming the field."""

    def to_dict(self) -> dict[str, Any]:
        return {i.name: _to_json(getattr(self, i.name)) for i in self.infos()}

    def arguments(self, *exclude: str) -> dict[str, Any]:
        """The parameters as keyword arguments of the job's kernel (the names are the kernel's)."""
        return {i.name: getattr(self, i.name) for i in self.infos() if i.name not in exclude}

    def replace(self: P, **changes: Any) -> P:
        return type(self).from_dict({**self.to_dict(), **{k: _to_json(v) for k, v in changes.items()}})

    def check_limits(self, limits: Limits) -> None:
        """Raise InvalidSpec naming the field whose value exceeds its limit."""
        for info in self.infos():
            try:
                info.check_limit(getattr(self, info.name), limits)
            except InvalidInput as exc:
                raise InvalidSpec(f"params.{info.name}", str(exc).split(": ", 1)[1]) from None

    def class_ids(self) -> Iterator[tuple[str, int]]:
        """(field name, class id) for every class id the parameters hold."""
        for info in self.infos():
            if not info.kind.classes:
                continue
            value = getattr(self, info.name)
            for class_id in value if isinstance(value, tuple) else (value,):
                if isinstance(class_id, int) and not isinstance(class_id, bool):
                    yield info.name, class_id

    def files(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """(field name, URIs) of every file parameter; its alias words (style's ``--init content``) are
        not files."""
        for info in self.infos():
            if info.kind.files:
                value = getattr(self, info.name)
                words = {word for word, _ in info.kind.aliases}
                yield info.name, tuple(u for u in (value if isinstance(value, tuple) else (value,)) if u not in words)

    def with_files(self: P, uris: Mapping[str, list[str]]) -> P:
        """A copy whose file parameters hold ``uris`` instead (per field, in the order of ``files``)."""
        changes: dict[str, Any] = {}
        for info in self.infos():
            if info.name not in uris:
                continue
            new, words = list(uris[info.name]), {word for word, _ in info.kind.aliases}
            value = getattr(self, info.name)
            if isinstance(value, tuple):
                changes[info.name] = [v if v in words else new.pop(0) for v in value]
            elif value not in words:
                changes[info.name] = new[0]
        return self.replace(**changes)


def resolve_classes(value: Any, kind: Kind, resolve: Callable[[str], int], field: str) -> Any:
    """A class parameter's command-line value with its aliases applied and names turned into ids by
    ``resolve`` (InvalidSpec naming ``field`` when one is unknown)."""
    aliases = dict(kind.aliases)

    def one(text: Any) -> Any:
        if isinstance(text, str) and text.strip().lower() in aliases:
            return aliases[text.strip().lower()]
        return resolve(text)

    try:
        if isinstance(value, list):
            return [one(v) for v in value]
        return one(value)
    except InvalidSpec:
        raise
    except InvalidInput as exc:
        raise InvalidSpec(field, str(exc)) from None
