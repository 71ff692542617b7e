"""Command-line options of ``collab-ls``, parsed once into a typed dataclass."""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import dataclass
from pathlib import Path

from collab_ls import __version__


@dataclass(frozen=True, kw_only=True)
class Options:
    """What the user asked for on the command line."""

    share: bool = False
    join_url: str | None = None
    relay_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    name: str = "user"
    ca_file: Path | None = None
    log_file: Path | None = None
    log_level: str = "INFO"
    server_command: tuple[str, ...] = ()
    workspace: Path | None = None
    allow_guest_commands: bool = False
    request_timeout: float = 10.0


def _default_name() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "user"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collab-ls",
        usage="collab-ls (--share [-- LANGUAGE-SERVER ARGS...] | --join URL) [options]",
        description=(
            "A language server for real-time collaborative editing. Start it from your "
            "editor as a language server: the host with --share, guests with --join URL. "
            "It speaks LSP on stdin/stdout; logs go to stderr or --log-file."
        ),
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--share", action="store_true", help="host a session for this folder")
    mode.add_argument(
        "--join",
        metavar="URL",
        help="join the session at URL (from the host); several URLs of one relay cluster, "
        "separated by commas, are tried in turn",
    )
    p.add_argument(
        "--relay",
        metavar="URL",
        help="with --share: use the relay at URL (ws://host:port) instead of an embedded one; "
        "several nodes of one Redis-backed relay, separated by commas, for fail-over",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="with --share: address the embedded relay listens on (default 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="with --share: port of the embedded relay (default: a free port)",
    )
    p.add_argument("--name", default=None, help="your name in the session (default: OS user)")
    p.add_argument(
        "--ca-file",
        type=Path,
        help="trust this CA (PEM) for wss:// relays, besides the system's certificates",
    )
    p.add_argument(
        "--workspace",
        type=Path,
        metavar="DIR",
        help="with --join, for guests with no checkout: mirror the host's project into DIR "
        "(contents fetched from the host)",
    )
    p.add_argument(
        "--allow-guest-commands",
        action="store_true",
        help="with --share -- CMD: let guests run the language server's "
        "workspace/executeCommand commands on this machine (refused by default)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --join: seconds a language request to the host may take (default 10)",
    )
    p.add_argument("--log-file", type=Path, help="write logs to this file instead of stderr")
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    p.add_argument("--version", action="version", version=f"collab-ls {__version__}")
    return p


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse ``argv``; exits with a clear message on bad options."""
    parser = build_parser()
    args = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is the host's language server command.
    command: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1 :]
    ns = parser.parse_args(args)
    if command and not ns.share:
        parser.error("a language server command (after --) goes with --share")
    if ns.workspace and not ns.join:
        parser.error("--workspace goes with --join (the host shares its own folder)")
    if ns.request_timeout <= 0:
        parser.error("--request-timeout must be positive")
    if ns.relay and not ns.share:
        parser.error("--relay goes with --share (guests take the relay from the join URL)")
    if not 0 <= ns.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, not {ns.port}")
    if ns.join:
        from collab_ls.relay_link import parse_relay_urls

        try:
            parse_relay_urls(ns.join)
        except ValueError as exc:
            parser.error(f"bad join URL: {exc}")
    return Options(
        share=ns.share,
        join_url=ns.join,
        relay_url=ns.relay,
        host=ns.host,
        port=ns.port,
        name=ns.name or _default_name(),
        ca_file=ns.ca_file,
        log_file=ns.log_file,
        log_level=ns.log_level,
        server_command=tuple(command),
        workspace=ns.workspace,
        allow_guest_commands=ns.allow_guest_commands,
        request_timeout=ns.request_timeout,
    )
