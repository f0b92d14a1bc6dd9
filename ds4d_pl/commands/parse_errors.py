"""Parse errors of the LightningCLI commands, said in one line: the offending key first, then
what is wrong with it, and the closest valid key when the key is unknown.

jsonargparse prints the full usage (every option of the command, some 150 lines) and then a
nested message in which the key is split over several lines; :func:`summarize` reads that
message back and :class:`DS4DArgumentParser` prints the summary instead (``--debug`` keeps
the original).
"""

from __future__ import annotations

import difflib
import re
import sys
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from ds4d_pl.commands.resolved import dataclass_keys, dataclass_of

_UNKNOWN_PATTERNS = (
    re.compile(r"does not accept option '(?P<key>[^']+)'"),
    re.compile(r"[Uu]nrecognized arguments: --(?P<key>[^\s=]+)"),
    re.compile(r"Key '(?P<key>[^']+)' is not expected"),
)
_NESTED_UNKNOWN = re.compile(r"Option '(?P<opt>[^']+)' is not accepted")
_PARSER_KEY = re.compile(r'Parser key "(?P<key>[^"]+)":')
_CLASS = re.compile(r"<class '(?:[\w.]+\.)?(?P<name>\w+)'>")
_LITERAL = re.compile(r"typing\.Literal\[(?P<choices>[^\]]*)\]")
_EXPECTED = re.compile(r"Expected an? (?P<what>.+?)\. Got value: (?P<value>.*)$")


def parser_keys(parser: Any) -> list[str]:
    """Every key a parser (and its subcommands) accepts, dataclass groups expanded."""
    subcommands = getattr(parser, "_subcommands_action", None)
    if subcommands is not None:
        keys: list[str] = []
        for sub in subcommands._name_parser_map.values():
            keys += parser_keys(sub)
        return sorted(set(keys))
    keys = []
    for action in parser._actions:
        dest = getattr(action, "dest", None)
        if not dest or dest in ("help", "config") or dest.startswith("print_"):
            continue
        keys.append(dest)
        inner = dataclass_of(getattr(action, "_typehint", None))
        if inner is not None:
            keys += dataclass_keys(inner, f"{dest}.")
    return sorted(set(keys))


def first_unknown(key: str, keys: list[str]) -> str:
    """The shortest prefix of ``key`` that no valid key has (``model.lossweights`` of
    ``model.lossweights.rgb``), which is what to correct."""
    valid = set(keys)
    parts = key.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix not in valid and not any(k.startswith(prefix + ".") for k in valid):
            return prefix
    return key


def closest(key: str, keys: list[str]) -> str | None:
    """The valid key nearest to ``key``: among siblings first (same parent group), then all."""
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = [k for k in keys if parent and k.startswith(parent + ".")]
    for pool, cutoff in ((siblings, 0.6), (keys, 0.75)):
        match = difflib.get_close_matches(key, pool, n=1, cutoff=cutoff)
        if match:
            return match[0]
    return None


def summarize(message: str, keys: list[str]) -> str:
    """One line for a jsonargparse error message: the key first, then what is wrong.

    Args:
        message: The parser's message.
        keys: Every valid key (for "did you mean").
    """
    path = [m.group("key") for m in _PARSER_KEY.finditer(message)]
    nested = _NESTED_UNKNOWN.search(message)
    unknown = None
    if nested is not None:
        unknown = ".".join([*path, nested.group("opt")])
    else:
        for pattern in _UNKNOWN_PATTERNS:
            m = pattern.search(message)
            if m is not None:
                unknown = m.group("key")
                break
    if unknown is not None:
        wrong = first_unknown(unknown, keys)
        depth = wrong.count(".")
        match = closest(wrong, [k for k in keys if k.count(".") == depth])
        hint = f"did you mean '{match}'?" if match else ""
        where = f"in '{unknown}'" if wrong != unknown else ""
        extra = "; ".join(p for p in (where, hint) if p)
        return f"unknown key '{wrong}'" + (f" ({extra})" if extra else "")
    if path:
        # The innermost explanation: the first line after the last 'Parser key "...":'.
        tail = message[message.rfind(f'Parser key "{path[-1]}":') :].split(":", 1)[1]
        lines = [ln.strip() for ln in tail.strip().splitlines() if ln.strip()]
        reason = _readable(lines[0] if lines else "invalid value")
        key = ".".join(path) if path[0] != "config" else "-c/--config"
        return f"{key}: {reason}"
    first = next((ln.strip() for ln in message.splitlines() if ln.strip()), message)
    return _readable(first)


def _readable(reason: str) -> str:
    """``Expected a <class 'int'>. Got value: x`` → ``expected int, got 'x'`` (and Literal
    types as their choices)."""
    reason = _CLASS.sub(r"\g<name>", reason)
    reason = _LITERAL.sub(lambda m: "one of " + m.group("choices"), reason)
    m = _EXPECTED.match(reason)
    if m is not None:
        return f"expected {m.group('what')}, got {m.group('value')!r}"
    return reason


class DS4DArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors are one line naming the key instead of the usage of
    every option followed by a nested message. Set ``debug`` for the original output."""

    debug: bool = False
    #: The subcommand being parsed, for errors the root parser raises (interpolation).
    command: str = ""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or self.debug:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        if prog == "ds4d" and self.command:
            prog = f"ds4d {self.command}"
        line = summarize(message, parser_keys(parser))
        sys.stderr.write(
            f"{prog}: error: {line}\n({prog} --help lists every key; --debug shows the parser's "
            "full message)\n"
        )
        self.exit(2)
