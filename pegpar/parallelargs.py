"""GNU parallel's command line, after `pegpar q --`: options, command, input sources.

`pegpar q -- ARGS` takes the ARGS GNU parallel takes (`parallel ARGS`): its
options first, then the command, then input sources (`::: values`,
`:::: files`, linked with `:::+` / `::::+`), or `-a FILE`, or stdin when no
source is named. `parse` reads the words (pure); `arguments` yields each job's
arguments, reading files and stdin lazily, so jobs can start as input comes.

The combinations follow parallel: sources are combined as a product (the
first varies slowest), a linked source is zipped with the one before it (the
shorter decides); `-n N` puts N of these records into one job; `--colsep`
splits each value into columns; `--trim` trims them.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from pegpar.errors import UserError

STDIN = "-"

# option -> (takes a value, what it sets); short and long names of GNU parallel
_OPTIONS: Dict[str, Tuple[bool, str]] = {
    "-a": (True, "arg_file"), "--arg-file": (True, "arg_file"),
    "-0": (False, "null"), "--null": (False, "null"),
    "-d": (True, "delimiter"), "--delimiter": (True, "delimiter"),
    "-n": (True, "max_args"), "--max-args": (True, "max_args"),
    "-N": (True, "max_args"), "--max-replace-args": (True, "max_args"),
    "-C": (True, "colsep"), "--colsep": (True, "colsep"),
    "--trim": (True, "trim"),
    "-I": (True, "replace"), "--replace": (True, "replace"),
    "--er": (True, "extension"), "--extensionreplace": (True, "extension"),
    "-q": (False, "quote"), "--quote": (False, "quote"),
    "-r": (False, "no_empty"), "--no-run-if-empty": (False, "no_empty"),
    "-k": (False, "keep_order"), "--keep-order": (False, "keep_order"),
    "--tag": (False, "tag"), "--tagstring": (True, "tagstring"),
    "--group": (False, "group"), "--line-buffer": (False, "line_buffer"), "--lb": (False, "line_buffer"),
    "-u": (False, "ungroup"), "--ungroup": (False, "ungroup"),
    "-j": (True, "jobs"), "-P": (True, "jobs"), "--jobs": (True, "jobs"),
    "--dry-run": (False, "dry_run"),
    "--resume": (False, "resume"), "--resume-failed": (False, "resume_failed"),
    "--retry-failed": (False, "retry_failed"),
    "--halt": (True, "halt"), "--halt-on-error": (True, "halt"),
    "-S": (True, "sshlogin"), "--sshlogin": (True, "sshlogin"),
    "--slf": (True, "sshloginfile"), "--sshloginfile": (True, "sshloginfile"),
    "--joblog": (True, "joblog"),
    "--timeout": (True, "timeout"),
    "--retries": (True, "retries"),
    "--bar": (False, "bar"), "--eta": (False, "eta"), "--progress": (False, "progress"),
    "--will-cite": (False, ""), "--no-notice": (False, ""), "--gnu": (False, ""),
}
_SOURCES = (":::", ":::+", "::::", "::::+")
# GNU parallel's options that pegpar q does not take (an error saying so; any
# other unknown option is a misspelling)
UNSUPPORTED = frozenset("""
    --pipe --spreadstdin --pipe-part --pipepart --block --block-size --recstart --recend --regexp
    --round-robin --roundrobin --total-jobs -X -m --xargs -s --max-chars
    --results --res --files --nice --load -l --memfree --delay --sem --semaphore --env --transfer
    --transferfile --tf --return --cleanup --trc --basefile --bf --wd --workdir --shebang --fifo --cat
    --header --plus --rpl --parens --tmux --tmuxpane -v --verbose -t --limit --compress --ssh --sshdelay
    --controlmaster -M --shuf --skip-first-line --csv --tty --fg --bg --linebuffer --ctag --ctagstring
    --color --colour --tee --citation --bibtex --version --number-of-cpus --number-of-cores
    --number-of-sockets --max-line-length-allowed --filter --filter-hosts --embed --sqlmaster
    --sqlworker --sql-master --sql-worker --sqlandworker --sql-and-worker -E --eof -e -i -L --max-lines
    -x --exit -U --seqreplace --slotreplace --basenamereplace --dirnamereplace --bnr --dnr --bner
    --basenameextensionreplace --jl --termseq --hostgroups --hgrp --group-by --arg-sep --arg-file-sep
    --argsep --argfilesep --link --xapply
""".split())


class NoSuchOption(UserError):
    """An option neither pegpar q nor GNU parallel has: a misspelling."""


@dataclass
class Spec:
    """What the words say. `sources`: (kind, values or path, linked), kind
    "args" (values given) or "file" (a path, `-` for stdin), in order."""

    command: List[str] = field(default_factory=list)
    sources: List[Tuple[str, object, bool]] = field(default_factory=list)
    null: bool = False
    delimiter: Optional[str] = None
    max_args: int = 1
    colsep: Optional[str] = None
    trim: str = "n"
    replace: str = "{}"
    extension: str = "{.}"
    quote: bool = False
    no_empty: bool = False
    keep_order: bool = False
    tag: bool = False
    tagstring: Optional[str] = None
    output: str = "group"  # group | line-buffer | ungroup
    jobs: Optional[str] = None
    dry_run: bool = False
    joblog: Optional[str] = None
    timeout: Optional[str] = None
    retries: Optional[str] = None
    resume: bool = False  # skip the jobs the joblog has
    resume_failed: bool = False  # skip those it has as succeeded
    retry_failed: bool = False  # run again the joblog's failed commands, not the input
    halt: Optional[Tuple[str, str, int, bool]] = None  # (now | soon, fail | success | done, N, N is a %)
    sshlogins: List[Tuple[str, str, int]] = field(default_factory=list)  # (-S value, file or "-S", line)
    bar: bool = False
    eta: bool = False
    progress: bool = False

    @property
    def meter(self) -> Optional[str]:
        """What is drawn on stderr (meter.py): --bar over --eta over --progress, as in parallel."""
        return "bar" if self.bar else "eta" if self.eta else "progress" if self.progress else None

    @property
    def separator(self) -> str:
        if self.null:
            return "\0"
        return "\n" if self.delimiter is None else self.delimiter

    @property
    def reads_stdin(self) -> bool:
        return not self.sources or any(kind == "file" and value == STDIN for kind, value, _ in self.sources)


def check_resume(spec: Spec, joblog_path: Optional[str]) -> None:
    for flag, name in ((spec.resume, "--resume"), (spec.resume_failed, "--resume-failed"),
                       (spec.retry_failed, "--retry-failed")):
        if flag and not joblog_path:
            raise UserError(f"{name} needs --joblog FILE", hint="the joblog of the run to take up again")


def parse(words: Sequence[str]) -> Spec:
    """GNU parallel's words -> Spec. An option parallel has and pegpar does not
    is a UserError naming it (never taken as part of the command)."""
    spec = Spec()
    i = 0
    while i < len(words) and words[i].startswith("-") and words[i] not in ("-", *_SOURCES):
        word = words[i]
        i += 1
        if word == "--":
            break
        if _bundle(word):
            for flag in _flags(word):
                _set(spec, _OPTIONS[flag][1], flag, None)
            continue
        name, value = _split_option(word)
        if name not in _OPTIONS and name in UNSUPPORTED:
            raise UserError(f"GNU parallel's option {name} is not supported by pegpar q",
                            hint="see README's \"pegpar for GNU parallel users\"")
        if name not in _OPTIONS:
            raise NoSuchOption(name)
        takes, key = _OPTIONS[name]
        if takes and value is None:
            if i == len(words):
                raise UserError(f"option {name} needs a value")
            value = words[i]
            i += 1
        if key:
            _set(spec, key, name, value)
    while i < len(words) and words[i] not in _SOURCES:
        spec.command.append(words[i])
        i += 1
    while i < len(words):
        marker = words[i]
        i += 1
        values = []
        while i < len(words) and words[i] not in _SOURCES:
            values.append(words[i])
            i += 1
        linked = marker.endswith("+")
        if marker.startswith("::::"):
            if not values:
                raise UserError(f"{marker} needs a file name")
            for n, path in enumerate(values):
                spec.sources.append(("file", path, linked and n == 0))
        else:
            spec.sources.append(("args", values, linked))
    return spec


def _split_option(word: str) -> Tuple[str, Optional[str]]:
    """`--name=value`, `-nVALUE`, bundled flags `-kq` -> (name, value or None)."""
    if word.startswith("--"):
        name, eq, value = word.partition("=")
        return name, (value if eq else None)
    name, rest = word[:2], word[2:]
    return name, (rest or None)


def _bundle(word: str) -> bool:
    """`-kq`: several one-letter flags, each a known one."""
    return (len(word) > 2 and word[0] == "-" and word[1] != "-"
            and all(f"-{c}" in _OPTIONS and not _OPTIONS[f"-{c}"][0] for c in word[1:]))


def _flags(word: str) -> List[str]:
    return [f"-{c}" for c in word[1:]]


_OUTPUTS = {"group": "group", "line_buffer": "line-buffer", "ungroup": "ungroup"}


def _set(spec: Spec, key: str, name: str, value: Optional[str]) -> None:
    if key in _OUTPUTS:
        spec.output = _OUTPUTS[key]
    elif value is None:  # a flag
        setattr(spec, key, True)
    elif key == "halt":
        spec.halt = parse_halt(value)
    elif key == "sshlogin":
        spec.sshlogins += [(login, "-S", 1) for login in value.split(",") if login]
    elif key == "sshloginfile":
        spec.sshlogins += _sshlogin_file(value)
    elif key == "arg_file":
        spec.sources.append(("file", value, False))
    elif key == "delimiter":
        spec.delimiter = _unbackslash(value)
    elif key == "max_args":
        if not value.isdigit():
            raise UserError(f"option {name} needs a number, not {value!r}")
        spec.max_args = int(value)
    elif key == "colsep":
        try:
            re.compile(value)
        except re.error as err:
            raise UserError(f"--colsep {value!r} is not a regular expression: {err}") from None
        spec.colsep = value
    elif key == "trim":
        if value not in ("n", "l", "r", "lr", "rl"):
            raise UserError(f"--trim {value!r}: expected n, l, r, lr or rl")
        spec.trim = value
    else:
        setattr(spec, key, value)


_LEGACY_HALT = {"0": None, "1": ("soon", "fail", 1, False), "2": ("now", "fail", 1, False)}


def parse_halt(text: str) -> Optional[Tuple[str, str, int, bool]]:
    """--halt as GNU parallel writes it: `now|soon,fail|success|done=N` or
    `=N%` (of all the jobs: the input is then read whole first, as parallel
    does), or the old 0 (never), 1 (soon,fail=1), 2 (now,fail=1). Gives
    (when, what, N, whether N is a percentage)."""
    if text in _LEGACY_HALT:
        return _LEGACY_HALT[text]
    m = re.fullmatch(r"(now|soon),(fail|success|done)=([0-9]+)(%?)", text)
    if m is None:
        raise UserError(f"--halt {text!r}: expected now|soon,fail|success|done=N or N% (or 0, 1, 2)")
    when, what, count, percent = m.groups()
    if not 1 <= int(count) <= (100 if percent else int(count)):
        raise UserError(f"--halt {text!r}: the count must be at least 1" + (", and at most 100%" if percent else ""))
    return when, what, int(count), bool(percent)


def _sshlogin_file(path: str) -> List[Tuple[str, str, int]]:
    """--slf: one sshlogin per line; empty lines and `#` comments skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise UserError(f"cannot read the sshlogin file: {err.strerror}", where=path) from None
    return [(line.strip(), path, n) for n, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")]


def sshlogin_hosts(logins: Sequence[Tuple[str, str, int]]) -> List[Tuple[str, int, str, int]]:
    """GNU parallel's sshlogins -> (host, sub-nodes, file, line): `N/host` is N
    sub-nodes on host (else one), `:` the local machine."""
    hosts = []
    for login, path, line in logins:
        where = f"{path}:{line}"
        count, slash, host = login.partition("/")
        if not slash or not count.isdigit():
            count, host = "1", login
        if host == ":":
            host = "localhost"
        if " " in host.strip():
            raise UserError(f"sshlogin {login!r}: an ssh command in an sshlogin is not supported",
                            where=where, hint="set ssh options in ~/.ssh/config or --ssh-config")
        if int(count) < 1:
            raise UserError(f"sshlogin {login!r}: at least one job slot", where=where)
        hosts.append((host.strip(), int(count), path, line))
    return hosts


MAX_JOBS = 250  # -j 0: "as many as possible", as GNU parallel caps it by file handles


def jobs_count(text: str, cores: int) -> int:
    """-j in GNU parallel's forms: N, N% (of the cores), +N, -N (cores more or
    fewer), 0 (as many as possible); at least 1."""
    m = re.fullmatch(r"([+-]?)([0-9]+(?:\.[0-9]+)?)(%?)", text.strip())
    if m is None:
        raise UserError(f"-j {text!r}: expected N, N%, +N, -N or 0")
    sign, number, percent = m.groups()
    n = float(number)
    if percent:
        count = cores * n / 100
    elif sign == "+":
        count = cores + n
    elif sign == "-":
        count = cores - n
    else:
        count = n if n else MAX_JOBS
    return max(1, min(int(count), MAX_JOBS))


def _unbackslash(text: str) -> str:
    """-d's escapes, as parallel reads them: \\n, \\t, \\0, \\\\ ..."""
    escapes = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "a": "\a", "f": "\f", "v": "\v"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), text)


# --- reading the arguments --------------------------------------------------

def split(stream: IO[bytes], separator: str) -> Iterator[str]:
    """Records of a byte stream, as they arrive: a record is given once it is
    whole (the last one also without its separator); bytes that are not
    UTF-8 are kept (surrogateescape) and written back as they came."""
    sep = separator.encode("utf-8", "surrogateescape")
    buffered = b""
    while True:
        data = stream.readline() if sep == b"\n" else stream.read1(1 << 16)  # type: ignore[attr-defined]
        if not data:
            break
        buffered += data
        if sep not in buffered:
            continue
        parts = buffered.split(sep)
        buffered = parts.pop()
        for part in parts:
            yield part.decode("utf-8", "surrogateescape")
    if buffered:
        yield buffered.decode("utf-8", "surrogateescape")


def _records_of(kind: str, value, spec: Spec, open_file: Callable[[str], IO[bytes]]) -> Iterator[str]:
    if kind == "args":
        for v in value:  # parallel writes the values one per record and reads them back
            yield from v.split(spec.separator) if spec.separator in v else (v,)
        return
    stream = open_file(value)
    try:
        yield from split(stream, spec.separator)
    finally:
        if value != STDIN:
            stream.close()


def _groups(sources: Sequence[Tuple[str, object, bool]]) -> List[List[int]]:
    """Indices of the sources, a linked one joined to the group before it."""
    groups: List[List[int]] = []
    for n, (_, _, linked) in enumerate(sources):
        if linked and groups:
            groups[-1].append(n)
        else:
            groups.append([n])
    return groups


def records(spec: Spec, open_file: Callable[[str], IO[bytes]]) -> Iterator[Tuple[str, ...]]:
    """One tuple of values per combination, the first group streamed, the
    others read whole (they are repeated for each of its values)."""
    sources = spec.sources or [("file", STDIN, False)]

    def rows(group: List[int]) -> Iterator[Tuple[str, ...]]:
        return zip(*(_records_of(sources[n][0], sources[n][1], spec, open_file) for n in group))

    groups = _groups(sources)
    rest = [list(rows(g)) for g in groups[1:]]
    for head in rows(groups[0]):
        for tail in itertools.product(*rest):
            yield head + tuple(v for row in tail for v in row)


def _trimmed(value: str, trim: str) -> str:
    if "l" in trim:
        value = value.lstrip(" \t")
    if "r" in trim:
        value = value.rstrip(" \t")
    return value


def arguments(spec: Spec, open_file: Callable[[str], IO[bytes]]) -> Iterator[List[str]]:
    """Each job's arguments, in input order."""
    splitter = re.compile(spec.colsep) if spec.colsep is not None else None
    group: List[str] = []
    taken = 0
    size = max(spec.max_args, 1)
    for record in records(spec, open_file):
        values = list(record)
        if splitter is not None:
            values = [col for v in values for col in splitter.split(v)]
        if spec.trim != "n":
            values = [_trimmed(v, spec.trim) for v in values]
        if spec.no_empty and all(not v.strip() for v in values):
            continue
        group.extend(values if spec.max_args else [])
        taken += 1
        if taken == size:
            yield group
            group, taken = [], 0
    if taken:
        yield group
