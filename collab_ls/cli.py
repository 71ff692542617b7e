"""``collab-ls``: the console script. LSP on stdio; logs never on stdout."""

from __future__ import annotations

import logging
import sys

from collab_ls.options import Options, parse_args


def setup_logging(options: Options) -> None:
    """Logs to the log file or stderr: stdout is the LSP channel."""
    handler: logging.Handler
    if options.log_file:
        options.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(options.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(options.log_level)
    # pygls logs the body of every message it sends at INFO: the shared text, in
    # every editor's log (Neovim keeps a server's stderr), and a write per keystroke.
    # Only with --log-level DEBUG.
    debug = root.level <= logging.DEBUG
    logging.getLogger("pygls").setLevel(logging.DEBUG if debug else logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``collab-ls``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["doctor"]:
        # A subcommand, not a language server: it may print to stdout.
        from collab_ls.doctor import main as doctor

        sys.exit(doctor(args[1:]))
    options = parse_args(argv)
    setup_logging(options)
    from collab_ls.server import create_server, serve_stdio

    logging.getLogger("collab_ls").info(
        "collab-ls starting (%s)", "host" if options.share else f"guest of {options.join_url}"
    )
    serve_stdio(create_server(options))


if __name__ == "__main__":
    main()
