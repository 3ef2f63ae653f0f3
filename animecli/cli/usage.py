"""Option errors as our one-line errors, and a --help page without Python type labels.

Typer reports a bad option value in a framed panel, with its validation library's wording
(``Value error, 'gif' is not one of 'same', …``), suggests options by string similarity of
the whole name, dashes included (``--bogus``: "--jobs, --verbose"), labels flags ``<bool>``
and lists ``<list[str]>``, and cuts long option names at 80 columns. :class:`UsageGroup`,
the ``cls`` of the top-level Typer app, changes that and nothing else:

- errors: ``error: --format 'gif': use one of same, png, jpg, webp`` on one line of stderr,
  exit 2; an unknown option is compared with the command's options by name, without
  the dashes, and only close matches (or options it begins) are suggested;
- help: no type label on flags, ``<str>`` instead of ``<list[str]>`` on repeatable options
  (their help says "repeatable"), none on an argument whose name says it takes several,
  ``<int>`` for ``<int range>`` (its bounds, in words, end the help: ``(1 to 100)``),
  and long labels (choices) broken into lines, so that an 80-column terminal does not
  cut the option names.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

# Typer's exceptions live in its vendored copy of Click; these public names lead to them.
_BAD_PARAMETER: type[Exception] = typer.BadParameter


def _click_class(name: str) -> type[Exception]:
    """``ClickException`` / ``UsageError``: bases of the public ``typer.BadParameter``."""
    for cls in _BAD_PARAMETER.__mro__:
        if cls.__name__ == name:
            return cls
    raise LookupError(name)  # pragma: no cover - a Typer without Click's exception tree


_CLICK_EXCEPTION = _click_class("ClickException")


def _is(exc: BaseException, name: str) -> bool:
    return any(cls.__name__ == name for cls in type(exc).__mro__)


# Messages of the validation library Typer uses, in our words.
_PROBLEMS = (
    (re.compile(r"Input should be a valid integer"), "not a whole number"),
    (re.compile(r"Input should be a valid number"), "not a number"),
    (re.compile(r"Input should be a valid boolean"), "not yes/no (use true or false)"),
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be at least \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be at most \1"),
    (re.compile(r"Input should be greater than (\S+)"), r"must be more than \1"),
    (re.compile(r"Input should be less than (\S+)"), r"must be less than \1"),
)
_CHOICE = re.compile(r"'(?P<value>.*)' is not one of (?P<choices>.+?)\.?$")
_LIBRARY_PREFIX = re.compile(r"^(Value|Assertion) error, ")


def _long_name(param: Any) -> str:
    """``--format`` for ``['--format', '-f']``; an argument's metavar or upper-case name."""
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or list(getattr(param, "opts", []))
    if getattr(param, "param_type_name", "") == "argument":
        return str(param.metavar or (param.name or "").upper())
    return opts[0] if opts else str(param.name)


def _given(argv: Sequence[str], param: Any) -> str | None:
    """The value given for ``param`` on the command line (the last one, as Click takes it)."""
    found = None
    names = list(getattr(param, "opts", [])) + list(getattr(param, "secondary_opts", []))
    for i, tok in enumerate(argv):
        if tok == "--":
            break
        for name in names:
            if tok == name and i + 1 < len(argv):
                found = argv[i + 1]
            elif name.startswith("--") and tok.startswith(name + "="):
                found = tok[len(name) + 1:]
            elif not name.startswith("--") and tok.startswith(name) and len(tok) > len(name):
                found = tok[len(name):]  # -fpng
    return found


def _sentence(text: str) -> str:
    """Click's "Missing option '--teacher'." as our clause: lower-case start, no full stops
    (an ellipsis, as in ``INPUT... OUTPUT``, stays)."""
    text = text.strip()
    if not text.endswith(".."):
        text = text.rstrip(".")
    text = re.sub(r"(?<!\.)\. (\w)", lambda m: "; " + m.group(1).lower(), text)
    return text[:1].lower() + text[1:]


def _help_hint(ctx: Any) -> str:
    """``see `animecli convert --help``` for the command ``ctx`` belongs to."""
    names = []
    while ctx is not None and getattr(ctx, "parent", None) is not None:
        names.append(str(ctx.info_name))
        ctx = ctx.parent
    return f"see `{' '.join(['animecli', *reversed(names)])} --help`"


def bad_value(exc: BaseException, argv: Sequence[str]) -> str:
    """The line for a value Typer refused (``exc`` is a ``BadParameter`` with its ``param``)."""
    param = getattr(exc, "param", None)
    ctx = getattr(exc, "ctx", None)
    raw = str(getattr(exc, "message", "") or exc)
    text = _LIBRARY_PREFIX.sub("", raw.strip())
    name = _long_name(param) if param is not None else "value"
    given = _given(argv, param) if param is not None else None
    choice = _CHOICE.match(text)
    if choice:
        choices = ", ".join(c.strip().strip("'") for c in choice["choices"].split(","))
        return f"error: {name} {choice['value']!r}: use one of {choices}"
    problem = None
    for pattern, words in _PROBLEMS:
        m = pattern.match(text)
        if m:
            problem = m.expand(words)
            break
    if problem is None:  # a message we have no words for: the library's, less its prefix and clause
        problem = _sentence(text.split(", unable to", 1)[0])
    default = getattr(param, "default", None)
    example = (f" (e.g. {name} {default})" if isinstance(default, (int, float)) and not isinstance(default, bool)
               and problem.startswith("not") else "")
    shown = f" {given!r}" if given is not None else ""
    return f"error: {name}{shown}: {problem}{example}" + ("" if example or "must be" in problem
                                                          else f"; {_help_hint(ctx)}")


def suggestions(typed: str, ctx: Any) -> list[str]:
    """Options of ``ctx``'s command that ``typed`` (an unknown ``--name``) may have meant.

    Names are compared without their dashes (``--bogus`` and ``--jobs`` share only the
    ``--``), and only close ones (difflib ratio ≥ 0.75) or ones it begins are offered.
    """
    import difflib  # only on this error path

    if not typed.startswith("--") or ctx is None:
        return []
    word = typed[2:].split("=", 1)[0].lower()
    longs: list[str] = []
    for p in ctx.command.get_params(ctx):
        for o in (*p.opts, *p.secondary_opts):
            if o.startswith("--") and o not in longs:
                longs.append(o)
    begun = [o for o in longs if len(word) >= 3 and o[2:].startswith(word)]
    close = ["--" + m for m in difflib.get_close_matches(word, [o[2:] for o in longs], n=3, cutoff=0.75)]
    return list(dict.fromkeys(begun + close))[:3]


def no_such_option(exc: BaseException) -> str:
    """The line for an option the command does not have."""
    typed = str(getattr(exc, "option_name", "") or "")
    ctx = getattr(exc, "ctx", None)
    maybe = suggestions(typed, ctx)
    if maybe:
        options = maybe[0] if len(maybe) == 1 else ", ".join(maybe[:-1]) + " or " + maybe[-1]
        return f"error: {typed}: no such option; did you mean {options}?"
    return f"error: {typed}: no such option; {_help_hint(ctx)}"


def error_line(exc: BaseException, argv: Sequence[str], root: Any = None) -> str:
    """One line for any of Typer's usage errors (``root``: the top-level command, which names
    the sub-command in the hint when the error comes without a context)."""
    if _is(exc, "NoSuchOption"):
        return no_such_option(exc)
    if _is(exc, "BadParameter") and not _is(exc, "MissingParameter") and getattr(exc, "param", None) is not None:
        return bad_value(exc, argv)
    format_message = getattr(exc, "format_message", None)
    text = _sentence(str(format_message() if callable(format_message) else exc))
    if text.endswith("?"):  # it asks "did you mean 'convert'?": that is the fix
        return f"error: {text}"
    return f"error: {text}; {_help_hint(getattr(exc, 'ctx', None) or _context_of(root, argv))}"


class _Named:
    """Enough of a Click context for :func:`_help_hint`: a name and a parent."""

    def __init__(self, info_name: str, parent: _Named | None) -> None:
        self.info_name, self.parent = info_name, parent


def _context_of(root: Any, argv: Sequence[str]) -> _Named:
    """The command ``argv`` names (its leading words), for errors that come without a context."""
    command, ctx = root, _Named("animecli", None)
    for word in argv:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command, ctx = sub, _Named(word, ctx)
    return ctx


# Widest type label, in columns. Rich fits a table into the terminal by narrowing its widest
# columns to the width of the next-widest, then every column alike: in ``convert``'s option
# table (``--num-gpus-per-worker``, ``--skip-existing``) a type column wider than this drags
# the option names down with the help text at 80 columns and cuts them (``--num-gpus-per-w…``).
# Longer labels (choices) are broken into lines; number bounds move into the help text.
LABEL_WIDTH = 9


def _fold(label: str, width: int = LABEL_WIDTH) -> str:
    """``<auto|eager|traced|onnx|int8>`` → lines of at most ``width``, broken after a ``|``."""
    lines = [""]
    for part in re.split(r"(?<=\|)", label):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def _bounds(param: Any) -> str:
    """A number option's bounds in words (``at least 0``, ``1 to 100``), or ""."""
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)

    def num(v: float) -> str:
        return f"{v:g}"

    if lo is not None and hi is not None:
        return f"{num(lo)} to {num(hi)}"
    if lo is not None:
        return f"at least {num(lo)}"
    return f"at most {num(hi)}" if hi is not None else ""


def tidy_help(command: Any, ctx: Any) -> None:
    """Drop Python type labels from the help of ``command`` and every command under it.

    Sets the options' ``metavar`` (what Typer shows in place of the type); an argument's
    label, which ignores ``metavar``, is hidden when its metavar already says it takes
    several values. Idempotent.
    """
    params = list(getattr(command, "params", []))
    help_option = command.get_help_option(ctx) if hasattr(command, "get_help_option") else None
    if help_option is not None:
        params.append(help_option)
    for p in params:
        kind = getattr(p, "param_type_name", "")
        if kind == "option" and getattr(p, "is_flag", False):
            p.metavar = ""
        elif kind == "option" and p.metavar is None and hasattr(p, "display_type_rich"):
            label = str(p.display_type_rich(ctx=ctx) or "")
            if label.startswith("<list[") and label.endswith("]>"):
                label = "<" + label[len("<list["):-2] + ">"
            ranged = re.match(r"^<(int|float) range>$", label)
            if ranged:
                label = f"<{ranged[1]}>"
                bounds = _bounds(p)
                if bounds and "_get_number_range_help_str" in dir(p):
                    # Typer would append "[x>=0]" to the label (too wide, and Python-speak): it goes
                    # into the help instead. Display only; the bounds are checked all the same.
                    p._get_number_range_help_str = lambda: None
                    p.help = f"{(p.help or '').rstrip()} ({bounds})".lstrip()  # not [...]: rich markup
            p.metavar = _fold(label)
        elif kind == "argument" and hasattr(p, "display_type_rich"):
            label = str(p.display_type_rich(ctx=ctx) or "")
            if label.startswith("<list[") and p.metavar and "..." in p.metavar:
                # TyperArgument shows its type whatever its metavar: hide it on this instance.
                p.display_type_rich = lambda ctx: None  # the metavar (INPUT... OUTPUT) says it all
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub, ctx)


class UsageGroup(TyperGroup):
    """The top-level command: Typer's, with one-line option errors and a tidier --help."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The sub-command, its help tidied (:func:`tidy_help`)."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            tidy_help(command, ctx)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The top-level help page, tidied."""
        tidy_help(self, ctx)
        super().format_help(ctx, formatter)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; usage errors print :func:`error_line` and exit 2.

        Typer's own handling is used for everything else (``standalone_mode=False`` lets
        its usage errors through to here, and returns the exit code of a ``typer.Exit``).
        """
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        except _CLICK_EXCEPTION as exc:
            if not _is(exc, "NoArgsIsHelpError"):  # that one has printed the help page already
                typer.echo(error_line(exc, argv, self), err=True)
            code = int(getattr(exc, "exit_code", 2))
        except typer.Abort:  # end of input at a prompt
            typer.echo("aborted", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code)
