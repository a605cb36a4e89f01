"""``ascent flower``: Flower, the Celery monitor, for ascent's broker, never unauthenticated on an
address other machines can reach (its API and pages would be open to anyone).

Secrets reach Flower through the environment and the app's configuration, not through an argument
list that ``ps`` shows: the broker URL is the app's, basic auth goes in ``FLOWER_BASIC_AUTH``, which
Flower reads itself.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable

from ascent.shared.errors import AscentError, InvalidInput
from ascent.shared.queue import create_app
from ascent.shared.settings import Settings, redact_url


def is_loopback(address: str) -> bool:
    """True for an address only this machine can reach (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # "" (every interface) or a host name: treated as reachable from elsewhere


def check_basic_auth(value: str, where: str) -> str:
    """``value`` if it is USER:PASSWORD[,USER2:PASSWORD2] with both parts non-empty, else InvalidInput."""
    pairs = [pair.split(":", 1) for pair in value.split(",")]
    if not all(len(pair) == 2 and pair[0] and pair[1] for pair in pairs):
        raise InvalidInput(f"{where}: must be USER:PASSWORD (comma-separated for several users), both non-empty")
    return value


def http_options(parser: argparse.ArgumentParser, port: int, port_type: Callable[[str], int]) -> None:
    """``--port``, ``--address`` and ``--basic-auth`` of an HTTP endpoint (Flower, the exporter); see
    ``serving_auth``."""
    parser.add_argument("--port", type=port_type, default=port, help="HTTP port (default %(default)s)")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        help="HTTP basic auth (default: ASCENT_FLOWER_BASIC_AUTH); required on a non-loopback address",
    )


def serving_auth(settings: Settings, address: str, basic_auth: str | None, what: str) -> str | None:
    """The ``user:password`` pairs an HTTP endpoint (Flower, the exporter) requires: ``--basic-auth``, else
    ASCENT_FLOWER_BASIC_AUTH, else none, which only a loopback ``address`` may do without (InvalidInput)."""
    if basic_auth:
        auth: str | None = check_basic_auth(basic_auth, "--basic-auth")
    elif settings.flower_basic_auth:
        auth = check_basic_auth(settings.flower_basic_auth, "ASCENT_FLOWER_BASIC_AUTH")
    else:
        auth = None
    if not auth and not is_loopback(address):
        raise InvalidInput(
            f"refusing to serve {what} on {address or 'every address'} without authentication: pass "
            "--basic-auth USER:PASSWORD or set ASCENT_FLOWER_BASIC_AUTH (or listen on 127.0.0.1)"
        )
    return auth


def serve(settings: Settings, address: str, port: int, basic_auth: str | None, note: Callable[[str], None]) -> None:
    """Run Flower in this process until it stops, then leave the process (see the end)."""
    if not settings.broker_url:
        raise InvalidInput("no broker configured: set ASCENT_BROKER_URL or pass --broker redis://HOST:6379/0")
    auth = serving_auth(settings, address, basic_auth, "Flower")
    if auth:
        os.environ["FLOWER_BASIC_AUTH"] = auth
    else:
        # Without auth Flower's API answers 401 unless FLOWER_UNAUTHENTICATED_API is set; its pages stay
        # open, which is why this only happens on a loopback address.
        os.environ.pop("FLOWER_BASIC_AUTH", None)
        note("Flower without authentication: only this machine can reach it; its API answers 401")
    note(
        f"Flower for {redact_url(settings.broker_url)} on http://{address}:{port}/ "
        f"({'basic auth' if auth else 'no auth'}); /metrics and /healthcheck answer without auth"
    )
    app = create_app(settings)
    try:
        app.start(["flower", f"--port={port}", f"--address={address}"])
    except OSError as exc:  # before anything started: the port is taken, the address is not ours
        raise AscentError(f"Flower cannot listen on {address}:{port}: {exc.strerror or exc}") from None
    # Flower has stopped serving (SIGTERM, Ctrl-C). Leave at once: when the broker is gone, Flower's pool
    # threads retry their broadcasts for ever, and a normal exit would wait for them (a SIGTERM that
    # never ends the process). Flower keeps no state to save.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
