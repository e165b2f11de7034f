"""Where jobs come from: queue.yaml (the file queue), or input as GNU parallel takes it.

Both answer the controller's one question, "give me up to n jobs", through
the `take` of pegpar.queue.QueueFile; input (stdin lines, `:::` values...)
is a queue in memory, filled as it is read.
"""

from __future__ import annotations

import collections
import functools
import re
import threading
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from pegpar import parallelargs, replacement
from pegpar.errors import NotYet, UserError
from pegpar.expand import Job
from pegpar.spec import Source

if TYPE_CHECKING:
    from pegpar.queue import Pending

STDIN = "<stdin>"
ARGS = "<args>"  # input from :::, :::: or -a
_USES_LINE = re.compile(r"\{\{[^}]*\bline\b")


def failed_again(records: List[Any]) -> Iterator[Job]:
    """--retry-failed: the command of each job a joblog has only as failed,
    as it ran (its last attempt), with its Seq, in Seq order."""
    succeeded = {r.seq for r in records if r.ok}
    last = {r.seq: r.command for r in records if r.seq not in succeeded}
    form = Form(())
    for seq in sorted(last):
        yield Job(command=last[seq], params=(), source=Source(ARGS, seq), plain=True,
                  call=Call(form, (), seq, last[seq]))


def command_lines(stream: IO[bytes]) -> Iterator[Job]:
    """Jobs of input lines that are commands (`pegpar q` with nothing after
    it): each non-empty line, as it arrives, its template syntax checked."""
    from pegpar import template

    for number, raw in enumerate(parallelargs.split(stream, "\n"), 1):
        line = raw.rstrip("\r")
        if line.strip():
            source = Source(STDIN, number)
            template.check_syntax(line, source)
            yield Job(command=line, params=(), source=source, plain=True)


@dataclass(frozen=True)
class Form:
    """The COMMAND of `pegpar q -- COMMAND`, shared by all its jobs: GNU
    parallel's replacement strings and Handlebars in the same words. Handlebars
    is rendered first, where the job runs (sub-node variables, `{{ line }}`: the
    raw input), each value pasted shell-quoted; then parallel's strings are
    filled from the job's arguments."""

    words: Tuple[str, ...]
    replace: str = "{}"
    extension: str = "{.}"
    quote_words: bool = False  # -q
    append: bool = True  # arguments appended when no replacement string is named

    @property
    def handlebars(self) -> bool:
        from pegpar import template

        return any(template.is_template(w) for w in self.words)

    def compiled(self, words: Tuple[str, ...]) -> replacement.Command:
        return _compiled(words, self.replace, self.extension, self.quote_words)

    def text(self) -> str:
        return " ".join(self.words)


@functools.lru_cache(maxsize=1024)
def _compiled(words: Tuple[str, ...], replace: str, extension: str, quote_words: bool) -> replacement.Command:
    return replacement.compile_command(words, replace, extension, quote_words)


# Braces a Handlebars value brings are kept out of parallel's replacement strings
_BRACES = str.maketrans({"{": "\U000f0001", "}": "\U000f0002"})
_BRACES_BACK = str.maketrans({"\U000f0001": "{", "\U000f0002": "}"})


def _paste(value: str) -> str:
    return replacement.quote(value).translate(_BRACES)


@dataclass(frozen=True)
class Call:
    """One job of a Form: its arguments and its position in the input (`{#}`);
    `line` its command line already, when that does not depend on where it runs."""

    form: Form
    args: Tuple[str, ...]
    seq: int
    line: Optional[str] = None

    def render(self, variables: Dict[str, Any], slot: int, source: Source) -> str:
        from pegpar import template

        if self.line is not None:
            return self.line
        form = self.form
        words = form.words
        if form.handlebars:
            if form.quote_words:  # -q: each word its own template
                words = tuple(template.render(w, variables, source, _paste) for w in words)
            else:
                words = (template.render(form.text(), variables, source, _paste),)
        text = form.compiled(words).line(self.args, self.seq, str(slot), form.append)
        return text.translate(_BRACES_BACK) if form.handlebars else text


def parallel_jobs(spec: parallelargs.Spec, open_file: Callable[[str], IO[bytes]]) -> Iterator[Job]:
    """The jobs of GNU parallel's command line, as its input is read. A job's
    `command` is its final line when nothing depends on where it runs, else
    the form (its line is made when it is placed)."""
    words = tuple(spec.command)
    form = Form(words, spec.replace, spec.extension, spec.quote,
                append=not _USES_LINE.search(" ".join(words)))
    name = STDIN if not spec.sources else ARGS
    compiled = form.compiled(words)
    fixed = not form.handlebars and not compiled.uses_slot
    for seq, args in enumerate(parallelargs.arguments(spec, open_file), 1):
        line = compiled.line(args, seq, None, form.append) if fixed else None
        params = (("line", " ".join(args)),) if form.handlebars else ()
        yield Job(command=form.text() if line is None else line, params=params, source=Source(name, seq),
                  plain=not words, call=Call(form, tuple(args), seq, line))


READ_AHEAD = 1000  # input jobs read before a sub-node is free for them


class InputQueue:
    """Jobs read from input (stdin, `:::`, files) as it comes, by a thread of
    its own, at most READ_AHEAD ahead of the jobs taken: a run starts at the
    first line and its memory does not grow with the input. Nothing is written
    anywhere. A line that cannot be read as a job ends the reading; `take`
    gives its error once the lines before it are taken. `whole`: all input is
    read before the first job is taken (`--bar`, `--eta`: as GNU parallel,
    which needs the total)."""

    def __init__(self, jobs: Iterator[Job], whole: bool = False):
        self._jobs: Deque[Job] = collections.deque()
        self._more = threading.Condition()
        self._ended = False
        self._error: Optional[UserError] = None
        self._crash: Optional[BaseException] = None
        self.read = 0  # jobs read so far: tells the controller that new input came
        self._ahead = None if whole else READ_AHEAD
        threading.Thread(target=self._reader, args=(jobs,), name="pegpar-input", daemon=True).start()

    def _reader(self, jobs: Iterator[Job]) -> None:
        try:
            for job in jobs:
                with self._more:
                    while self._ahead is not None and len(self._jobs) >= self._ahead:
                        self._more.wait()
                    self._jobs.append(job)
                    self.read += 1
        except UserError as err:
            self._error = err
        except OSError as err:
            self._error = UserError(f"cannot read the input: {err.strerror or err}")
        except BaseException as err:  # pegpar's own fault: the run stops with it, not as if input ended
            self._crash = err
        finally:
            with self._more:
                self._ended = True

    def take(self, n: int, accept: Callable[[Job], None],
             on_commit: Optional[Callable[[Optional[Pending]], None]] = None,
             on_abandon: Optional[Callable[[], None]] = None,
             skip_waiting: bool = False) -> Optional[Tuple[List[Job], Optional[UserError]]]:
        """As QueueFile.take, on the jobs read so far."""
        from pegpar.queue import BACKFILL_WINDOW

        if self._crash is not None:
            raise self._crash
        taken: List[Job] = []
        if self._ahead is None and not self._ended:
            return taken, None
        skipped: List[Job] = []  # jobs that wait, passed over (skip_waiting)
        error: Optional[UserError] = None
        with self._more:
            while self._jobs and len(taken) < n:
                job = self._jobs.popleft()
                try:
                    accept(job)
                except NotYet as err:
                    error = error or err
                    skipped.append(job)
                    if skip_waiting and len(skipped) < BACKFILL_WINDOW:
                        continue
                    break
                except UserError as err:
                    self._jobs.appendleft(job)
                    error = err
                    break
                taken.append(job)
            self._jobs.extendleft(reversed(skipped))
            if error is None and not self._jobs and self._ended and self._error is not None:
                error = self._error
            self._more.notify()
        if taken and on_commit is not None:
            on_commit(None)  # no file to replace
        return taken, error

    def is_empty(self) -> bool:
        """All input read and taken (an input error counts as the end)."""
        with self._more:
            return self._ended and not self._jobs and self._error is None

    def total(self) -> Optional[int]:
        """All the jobs of the input, once it is all read."""
        return self.read if self._ended else None

    def pending(self) -> int:
        """Jobs read and not taken yet (more may follow)."""
        return len(self._jobs)

    def mtime(self) -> float:
        return float(self.read)
