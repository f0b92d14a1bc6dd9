"""Config files of the ``fit | validate | test | predict`` commands: checked before parsing, and
interpolated after every file and flag is merged.

The parser reads YAML without saying which file a syntax error is in, and reads an empty file
or a list as an "unexpected config"; :func:`check_config_files` names the file and the line
first. Presets may compute values from other keys with OmegaConf interpolation, resolved once
every ``-c`` file and flag is applied, so an override moves every value derived from it::

    densify:
      stop_step: ${ds4d.int:'${model.schedule.coarse_steps} + 0.75 * ${model.schedule.fine_steps}'}

``${ds4d.int:'EXPR'}`` evaluates ``+ - * / //`` and parentheses over numbers and rounds to an
integer; nothing else is evaluated.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from pathlib import Path

import yaml

from ds4d_pl.errors import ConfigError

_OPERATORS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}


def arithmetic(expression: str) -> float:
    """The value of ``expression`` (numbers, ``+ - * / //``, unary minus, parentheses).

    Raises:
        ConfigError: Anything else (names, calls, attributes) or a syntax error.
    """

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ConfigError(f"${{ds4d.int:...}}: only numbers and + - * / // in {expression!r}")

    try:
        tree = ast.parse(str(expression).strip(), mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"${{ds4d.int:...}}: cannot read {expression!r} ({err.msg})") from err
    return value(tree.body)


def _int_resolver(expression: str) -> int:
    return int(round(arithmetic(expression)))


def register_resolvers() -> None:
    """Make ``${ds4d.int:'EXPR'}`` available to config files (idempotent)."""
    import omegaconf
    from omegaconf import OmegaConf

    major, minor = (int(p) for p in omegaconf.__version__.split(".")[:2])
    # 2.4 renamed register_new_resolver (now deprecated) to register_resolver, the name that
    # 2.3 still uses for its legacy string-only API.
    if (major, minor) >= (2, 4):
        OmegaConf.register_resolver("ds4d.int", _int_resolver, replace=True)
    else:
        OmegaConf.register_new_resolver("ds4d.int", _int_resolver, replace=True)


def config_file_args(argv: list[str]) -> list[str]:
    """The files given with ``-c``/``--config`` in ``argv``."""
    files = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def check_config_file(path: str) -> None:
    """Fail with the file named when a config file is missing, not YAML, empty or not a
    mapping of keys.

    Raises:
        ConfigError: What is wrong, starting with the path (and the line of a syntax error).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from err
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from err
    if content is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(content, dict):
        raise ConfigError(
            f"{path}: a config file must map keys to values (e.g. 'model:'), not hold a "
            f"{type(content).__name__}"
        )


def check_config_files(argv: list[str]) -> None:
    """:func:`check_config_file` on every ``-c`` file of ``argv``."""
    for path in config_file_args(argv):
        check_config_file(path)
