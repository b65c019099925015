"""On/off switches as users type them: ``--resume``, ``--no-resume``, ``--resume true``, ``--resume=no``.

Every boolean option of the CLI is declared as a pair (``--resume/--no-resume``). Typer shows such a switch as
``<bool>`` in ``-h``, which invites a value; click itself would refuse one ("unexpected extra argument").
``normalize_switches`` rewrites a switch followed by a boolean word into the switch that word means, before
click parses the line. Only the switches of the command being run are touched, and only when the next word
is a boolean word, so other options' values are never read as one.
"""

from __future__ import annotations

from typing import Any

# click's own boolean words (BoolParamType), lower case.
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})


def _leaf(command: Any, args: list[str]) -> tuple[Any, int]:
    """The (sub)command ``args`` run and the index of its first own argument."""
    i = 0
    while hasattr(command, "commands") and i < len(args):
        token = args[i]
        if token.startswith("-"):  # a root option (-h, --version): the group itself handles the line
            return command, i + 1
        sub = command.commands.get(token)
        if sub is None:
            return command, i + 1
        command, i = sub, i + 1
    return command, i


def _switch_table(command: Any) -> dict[str, tuple[str, str]]:
    """``{option string: (on, off)}`` for every boolean on/off pair of ``command``."""
    table: dict[str, tuple[str, str]] = {}
    for param in getattr(command, "params", []):
        if getattr(param, "is_bool_flag", False) and param.secondary_opts:
            on = next(o for o in param.opts if o.startswith("--"))
            off = next(o for o in param.secondary_opts if o.startswith("--"))
            for name in (*param.opts, *param.secondary_opts):
                table[name] = (on, off) if name in param.opts else (off, on)
    return table


def _word(value: str) -> bool | None:
    low = value.strip().lower()
    return True if low in TRUE_WORDS else False if low in FALSE_WORDS else None


def normalize_switches(command: Any, args: list[str]) -> list[str]:
    """``args`` with each ``--switch WORD`` / ``--switch=WORD`` (WORD a boolean word) replaced by the switch
    it means: ``--resume no`` -> ``--no-resume``, ``--no-resume=yes`` -> ``--resume``. Anything else is kept.
    """
    leaf, start = _leaf(command, args)
    table = _switch_table(leaf)
    if not table:
        return args
    out = list(args[:start])
    i = start
    while i < len(args):
        token = args[i]
        name, eq, value = token.partition("=")
        if name in table and eq:
            word = _word(value)
            if word is not None:
                out.append(table[name][0] if word else table[name][1])
                i += 1
                continue
        elif token in table and i + 1 < len(args) and _word(args[i + 1]) is not None:
            out.append(table[token][0] if _word(args[i + 1]) else table[token][1])
            i += 2
            continue
        if token == "--":
            out.extend(args[i:])
            break
        out.append(token)
        i += 1
    return out
