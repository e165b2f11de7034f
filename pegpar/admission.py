"""Load- and memory-aware admission (--max-load, --memfree), as GNU parallel's
--load and --memfree do it: a host whose load is above the limit, or whose
free memory is below it, takes no new job until a later reading says
otherwise. Its running jobs go on.

Every MEASURE_EVERY seconds each host is read: `/proc/loadavg` and
`/proc/meminfo` on the node, through the host's shared ssh connection (no new
login), or on this machine for local sub-nodes. The load is GNU parallel's:
the processes running right now (the 4th field of /proc/loadavg, less the
reader itself), not the minute's average, so a host goes over the limit by at
most the jobs started before the next reading. Free memory is MemAvailable.
Until its first reading a host with a limit takes no job.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Tuple

from pegpar import proc
from pegpar.errors import UserError

if TYPE_CHECKING:
    from pegpar.controller import Controller

MEASURE_EVERY = 2.0  # seconds between readings of a host
READ = "cat /proc/loadavg; grep '^MemAvailable:' /proc/meminfo"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """A memory size as GNU parallel's --memfree takes it: a number with an
    optional k, M, G, T or P (powers of 1024), e.g. 500M, 1.5G."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kKmMgGtTpP]?)[bB]?\s*", text)
    if not m:
        raise UserError(f"{text!r} is not a memory size", hint="e.g. 512M or 2G")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def size_text(n: float) -> str:
    for unit in "PTGMk":
        if n >= _UNITS[unit.lower()]:
            return f"{n / _UNITS[unit.lower()]:.3g}{unit}"
    return f"{int(n)}"


def reading(output: str) -> Tuple[float, Optional[int]]:
    """(processes running, bytes of memory available) from READ's output."""
    lines = output.splitlines()
    running = float(lines[0].split()[3].split("/")[0]) - 1 if lines and len(lines[0].split()) > 3 else None
    if running is None:
        raise ValueError(f"unexpected /proc/loadavg: {output[:80]!r}")
    mem = next((int(line.split()[1]) * 1024 for line in lines[1:] if line.startswith("MemAvailable:")), None)
    return max(0.0, running), mem


@dataclass(frozen=True)
class Limits:
    max_load: Optional[float] = None
    memfree: Optional[int] = None  # bytes

    def __bool__(self) -> bool:
        return self.max_load is not None or self.memfree is not None

    def why_held(self, load: float, mem: Optional[int]) -> Optional[str]:
        """Why a host with this reading takes no new job (None: it may)."""
        if self.max_load is not None and load > self.max_load:
            return f"load {load:g} above --max-load {self.max_load:g}"
        if self.memfree is not None and mem is not None and mem < self.memfree:
            return f"{size_text(mem)} of memory free, below --memfree {size_text(self.memfree)}"
        return None


class Admission:
    """The readings of each host and which hosts are held back (`held`)."""

    def __init__(self, ctl: "Controller", limits: Limits):
        self.ctl = ctl
        self.limits = limits
        self.held: Dict[str, str] = {}  # host -> why it takes no new job now
        self._reading: Dict[str, subprocess.Popen] = {}
        self._next: Dict[str, float] = {}

    def turn(self) -> None:
        """Collect the readings that came in and start the ones that are due."""
        if not self.limits:
            return
        ctl = self.ctl
        now = time.time()
        hosts = {n.host: n.local for n in ctl.nodes}
        for host, local in hosts.items():
            if host not in self._next:
                self._next[host] = 0.0
                self.held[host] = "its load is being read"
            p = self._reading.get(host)
            if p is not None:
                if p.poll() is None:
                    if now > self._next[host] + MEASURE_EVERY + ctl.opts.connect_timeout:
                        p.kill()  # no answer: tried again later (a dead host is health's to find)
                        p.wait()
                        del self._reading[host]
                    continue
                del self._reading[host]
                self._read(host, p)
            if now >= self._next[host] and host not in ctl.health.down:
                argv = ["sh", "-c", READ] if local else [ctl.rt.ssh, host, READ]
                self._reading[host] = proc.spawn(argv, env=ctl.rt.env(), stdout=subprocess.PIPE,
                                                 stderr=subprocess.DEVNULL)
                self._next[host] = now + MEASURE_EVERY
        for host in list(self.held):
            if host not in hosts:
                del self.held[host]

    def _read(self, host: str, p: subprocess.Popen) -> None:
        out = p.stdout.read().decode("utf-8", "replace") if p.stdout else ""
        if p.stdout:
            p.stdout.close()
        try:
            load, mem = reading(out)
        except ValueError:
            return  # no reading this time: the host keeps its state until the next one
        why = self.limits.why_held(load, mem)
        before = self.held.get(host)
        if why is None:
            self.held.pop(host, None)
            if before is not None and not before.startswith("its load is being read"):
                self.ctl.printer.say(f"host {host} takes jobs again (load {load:g}"
                                     + (f", {size_text(mem)} free" if mem is not None else "") + ")")
        else:
            self.held[host] = why
            if before is None or before.startswith("its load is being read"):
                self.ctl.printer.say(f"host {host} takes no new job: {why}")

    def stop(self) -> None:
        for p in self._reading.values():
            p.kill()
            p.wait()
        self._reading.clear()
