"""GNU parallel's replacement strings and quoting, as its own code defines them.

A command of `pegpar q -- COMMAND` is compiled once into pieces: literal text
and replacement strings (`{}`, `{.}`, `{/}`, `{//}`, `{/.}`, `{#}`, `{%}`, and
the positional `{N}`, `{N.}`, `{N/}`, `{N//}`, `{N/.}` with N negative from the
end). A job fills them from its arguments, each value shell-quoted as
parallel quotes it; a command with no replacement string gets the quoted
arguments appended. `{%}` (the sub-node's number on its host) is known only
where the job runs: it stays a marker that `fill_slot` replaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

from pegpar.errors import UserError

SLOT_MARK = "\U000f0000"  # a private-use character standing for `{%}` until the job is placed

_SAFE = re.compile(r"[^-_.+a-zA-Z0-9/]")


def quote(value: str) -> str:
    """Shell-quote as GNU parallel does (shell_quote_scalar_default): nothing
    when only [-_.+a-zA-Z0-9/] appear, else '...' with each run of ' as "'''"."""
    if value == "":
        return "''"
    if not _SAFE.search(value):
        return value
    text = "'" + re.sub(r"'+", lambda m: "'\"" + m.group(0) + "\"'", value) + "'"
    if text.startswith("''"):
        text = text[2:]
    if text.endswith("''"):
        text = text[:-2]
    return text


# --- the string functions (parallel's %Global::replace) ---------------------

def _basename(value: str) -> str:
    return re.sub(r".*/", "", value, count=1)


def _no_extension(value: str) -> str:
    return re.sub(r"\.[^/.]*$", "", value, count=1)


def _fileparse(path: str) -> Tuple[str, str]:
    i = path.rfind("/")
    return (path[i + 1:], path[:i + 1]) if i >= 0 else (path, "./")


def _strip_slashes(path: str) -> str:
    return re.sub(r"(.)/*\Z", r"\1", path, count=1, flags=re.S)


def _dirname(value: str) -> str:
    """Perl's File::Basename::dirname on Unix."""
    base, directory = _fileparse(value)
    directory = _strip_slashes(directory)
    if not base:
        base, directory = _fileparse(directory)
        directory = _strip_slashes(directory)
    return directory


_FUNCTIONS = {
    "": lambda v: v,
    ".": _no_extension,
    "/": _basename,
    "//": _dirname,
    "/.": lambda v: _no_extension(_basename(v)),
}


@dataclass(frozen=True)
class Rpl:
    """A replacement string: `position` None for all arguments, 1-based or
    negative for one; `kind` one of _FUNCTIONS, or "#" / "%"."""

    kind: str
    position: Optional[int] = None


Piece = Union[str, Rpl]


def compile_command(words: Sequence[str], replace: str = "{}", extension: str = "{.}",
                    quote_words: bool = False) -> "Command":
    """The command words (joined by spaces, as parallel joins them; with -q each
    word quoted) as pieces. `replace` is -I's string for `{}`, `extension`
    --extensionreplace's for `{.}`. `{= perl =}` is refused: pegpar has no Perl."""
    text = " ".join(words)
    if "{=" in text and "=}" in text.partition("{=")[2]:
        raise UserError("`{= ... =}` (a Perl expression) is not supported by pegpar",
                        hint="use a Handlebars helper instead, e.g. {{ file_stem line }}")
    pattern = _pattern(replace, extension)
    compiled = [_pieces(word, pattern, replace, extension) for word in words]
    return Command(tuple(compiled), quote_words)


def _pattern(replace: str, extension: str) -> "re.Pattern[str]":
    names = [re.escape(replace), re.escape(extension), r"\{/\}", r"\{//\}", r"\{/\.\}", r"\{#\}", r"\{%\}",
             r"\{-?[0-9]+(?:\.|/|//|/\.)?\}"]
    if replace != "{}":  # parallel keeps the other strings; only `{}` itself is renamed
        names.remove(re.escape(replace))
        names.insert(0, re.escape(replace))
    return re.compile("|".join(names))


def _pieces(word: str, pattern: "re.Pattern[str]", replace: str, extension: str) -> Tuple[Piece, ...]:
    out: List[Piece] = []
    pos = 0
    for m in pattern.finditer(word):
        if m.start() > pos:
            out.append(word[pos:m.start()])
        pos = m.end()
        token = m.group(0)
        if token == replace:
            out.append(Rpl(""))
        elif token == extension:
            out.append(Rpl("."))
        elif token in ("{#}", "{%}"):
            out.append(Rpl(token[1]))
        else:
            inner = token[1:-1]
            digits = re.match(r"-?[0-9]+", inner)
            if digits is None:  # {/} {//} {/.}
                out.append(Rpl(inner))
            else:
                position = int(digits.group(0))
                if position == 0:  # parallel leaves {0} alone
                    out.append(token)
                else:
                    out.append(Rpl(inner[digits.end():], position))
    if pos < len(word):
        out.append(word[pos:])
    return tuple(out)


@dataclass(frozen=True)
class Command:
    words: Tuple[Tuple[Piece, ...], ...]
    quote_words: bool  # -q

    @property
    def replaces(self) -> bool:
        """Whether the command names any replacement string (else the arguments are appended)."""
        return any(isinstance(p, Rpl) for word in self.words for p in word)

    @property
    def uses_slot(self) -> bool:
        return any(isinstance(p, Rpl) and p.kind == "%" for word in self.words for p in word)

    def line(self, args: Sequence[str], seq: int, slot: Optional[str] = None, append: bool = True,
             quoting: Callable[[str], str] = quote) -> str:
        """The command line of one job. `slot` None leaves SLOT_MARK where `{%}` is.
        No words: the arguments are the command, unquoted (as parallel runs
        `parallel ::: 'echo a'`). `quoting`: how values are pasted (`str` for a --tagstring)."""
        if not self.words:
            return " ".join(args)
        slot_text = SLOT_MARK if slot is None else slot
        texts = [self._word(word, args, seq, slot_text, quoting) for word in self.words]
        text = " ".join(texts)
        if append and not self.replaces:
            text += " " + " ".join(quoting(a) for a in args)
        return text

    def _word(self, word: Tuple[Piece, ...], args: Sequence[str], seq: int, slot: str,
              quoting: Callable[[str], str]) -> str:
        if not self.quote_words:
            return "".join(p if isinstance(p, str) else _value(p, args, seq, slot, quoting) for p in word)
        # -q: values raw inside the word; several values of one string are words of their own
        parts = [""]
        for p in word:
            if isinstance(p, str):
                parts[-1] += p
                continue
            values = _values(p, args, seq, slot)
            if values:
                parts[-1] += values[0]
                parts.extend(values[1:])
        return " ".join(quote(part) for part in parts)


def _values(p: Rpl, args: Sequence[str], seq: int, slot: str) -> List[str]:
    if p.kind == "#":
        return [str(seq)]
    if p.kind == "%":
        return [slot]
    if p.position is None:
        chosen = list(args)
    else:
        index = p.position - 1 if p.position > 0 else len(args) + p.position
        if not 0 <= index < len(args):
            return []  # a position past the arguments is empty, unquoted, as in parallel
        chosen = [args[index]]
    return [_FUNCTIONS[p.kind](a) for a in chosen]


def _value(p: Rpl, args: Sequence[str], seq: int, slot: str, quoting) -> str:
    if p.kind in ("#", "%"):
        return _values(p, args, seq, slot)[0]
    return " ".join(quoting(v) for v in _values(p, args, seq, slot))


def fill_slot(command: str, slot: int) -> str:
    return command.replace(SLOT_MARK, str(slot))
