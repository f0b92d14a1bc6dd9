"""``ds4d``: the command-line entry point.

Each command lives in a module of :mod:`ds4d_pl.commands` and is imported only when it runs, so
``ds4d --help`` (and the help of the light commands) answers without importing Lightning.
Lightning's own subcommands (``fit``, ``validate``, ``test``, ``predict``) go to
:mod:`ds4d_pl.commands.train`. Expected errors are one line and exit status 2
(:mod:`ds4d_pl.errors`).
"""

from __future__ import annotations

import importlib
import sys

from ds4d_pl.errors import EXIT_CODE, DS4DError, debug_requested, one_line

#: Every command: the module that runs it and its one-line summary (``ds4d --help``).
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("train", "train a 4D asset from a video, then test it"),
    "validate": ("train", "score a checkpoint on the validation frames"),
    "test": ("train", "score a checkpoint (benchmark protocol, held-out frames); metrics.json"),
    "predict": ("train", "render the evaluation views of a checkpoint to PNG files"),
    "prepare": ("prepare", "turn your own video or frames into a dataset folder"),
    "render": ("render", "render videos of a trained run at any size, view and frame rate"),
    "export": ("export", "write a trained run's Gaussians per frame as PLY or .splat files"),
    "synth": ("synth", "write the embedded synthetic object in a dataset layout"),
    "eval": ("evaluate", "score renders of any method against ground truth"),
    "weights": ("weights", "list the pretrained networks: found or missing, and where"),
    "view": ("view", "look at a run in the browser: time slider, cameras, dynamic energy"),
}


def usage() -> str:
    """The top-level help: every command with its summary."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: ds4d COMMAND [options]   (ds4d COMMAND --help for its options)",
        "",
        "Video-to-4D Gaussians with dynamic-static feature decoupling (DS4D).",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ds4d`` console script.

    Errors the user can fix (:class:`~ds4d_pl.errors.DS4DError`) print as one line and exit
    with status 2; ``--debug`` anywhere on the command line (or ``DS4D_DEBUG=1``) shows the
    traceback instead.
    """
    debug, args = debug_requested(list(sys.argv[1:] if argv is None else argv))
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if args else 2)
    name = args[0]
    if name not in COMMANDS:
        print(f"ds4d: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    # Before the command imports anything heavy: one thread per usable CPU, or the user's
    # OMP_NUM_THREADS (ds4d_pl.threads says why). A program that calls main() after importing
    # torch itself (a notebook, the tests) keeps the thread count it chose.
    if "torch" not in sys.modules:
        from ds4d_pl.threads import configure_threads

        try:
            configure_threads()
        except ValueError as err:
            print(one_line(name, err), file=sys.stderr)
            sys.exit(EXIT_CODE)
    try:
        module = importlib.import_module(f"ds4d_pl.commands.{COMMANDS[name][0]}")
        if COMMANDS[name][0] == "train":
            module.run(args, debug=debug)
            return
        code = module.main(args[1:])
    except DS4DError as err:
        if debug:
            raise
        print(one_line(name, err), file=sys.stderr)
        sys.exit(EXIT_CODE)
    sys.exit(code)


if __name__ == "__main__":
    main()
