"""A throw-away cluster of real sshd processes on loopback addresses, for end-to-end tests.

Node K (`node-1`, `node-2`, ...) is one `/usr/sbin/sshd` listening on 127.0.0.(K+1),
running as the current user, with its own host key. One user key, generated for
the run, logs in to every node. Commands learn where they run from the
environment: `NODE=node-K` (also `PEGPAR_TEST_NODE`); each node's sessions have
a home of their own (HOME), so the user's shell start-up files stay out of
them. The cluster writes an
ssh_config naming the nodes and a known_hosts file holding their real host keys:
host-key checking stays ON (StrictHostKeyChecking yes), as it must for pegpar.

All nodes share one TCP port, picked at random for each cluster and checked to
be free on every address, so test sessions running side by side (or a system
sshd on port 22) never collide; the ssh_config carries the port. Nodes keep
sshd's stock limits (MaxSessions 10, MaxStartups 10:30:100) so tests meet what
users meet.

Clusters started by a process live in a per-user directory
(`$TMPDIR/pegpar-test-cluster-UID/run-*`) that records their owner; a cluster
whose owner died (a test run killed with SIGKILL) is stopped and removed by the
next `start`. Linux only: other systems route only 127.0.0.1 to loopback.

By hand:

    python tests/cluster.py start 4 /tmp/pc    # prints how to use it
    ssh -F /tmp/pc/ssh_config node-1 'echo $NODE'
    python tests/cluster.py stop /tmp/pc
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Set, Tuple, Union

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
STATE = "cluster.json"
PORTS = (20000, 32000)  # below Linux's ephemeral range, where outgoing connections take ports
START_TIMEOUT = 10.0  # hang guard only

Node = Union[int, str]  # 3 or "node-3"


def find_sshd() -> Optional[str]:
    """Absolute path of sshd (sshd refuses to run from a relative path), or None."""
    override = os.environ.get("PEGPAR_TEST_SSHD")
    if override:
        return os.path.abspath(override) if os.access(override, os.X_OK) else None
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


def runtime_root() -> str:
    """The per-user directory where clusters owned by a process live (private, ours)."""
    root = os.path.join(tempfile.gettempdir(), f"pegpar-test-cluster-{os.getuid()}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    st = os.lstat(root)
    if st.st_uid != os.getuid() or not os.path.isdir(root) or os.path.islink(root):
        raise RuntimeError(f"{root} is not a directory owned by this user")
    os.chmod(root, 0o700)
    return root


def node_name(k: int) -> str:
    return f"node-{k}"


def node_address(k: int) -> str:
    return f"127.0.0.{k + 1}"


class PortBusy(Exception):
    pass


class Cluster:
    """N sshd nodes described by the files in `dir`; see the module docstring."""

    def __init__(self, dir: str, n: int, port: int, user: str, sshd: str,
                 owner: Optional[List[int]], sshd_options: Optional[Dict[str, str]] = None) -> None:
        self.dir = dir
        self.sshd_options = dict(sshd_options or {})  # sshd_config lines beyond the stock ones
        self.n = n
        self.port = port
        self.user = user
        self.sshd = sshd
        self.owner = owner  # [pid, start time] of the process the cluster dies with; None: by hand
        self._procs: Dict[int, subprocess.Popen] = {}
        self._frozen: Set[int] = set()

    # -- what tests use -------------------------------------------------------------------

    @property
    def ssh_config(self) -> str:
        return os.path.join(self.dir, "ssh_config")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.dir, "known_hosts")

    @property
    def identity(self) -> str:
        return os.path.join(self.dir, "id_ed25519")

    @property
    def nodes(self) -> List[str]:
        return [node_name(k) for k in range(1, self.n + 1)]

    def address(self, node: Node) -> str:
        return node_address(self._k(node))

    def ssh(self, node: Node, cmd: str, timeout: float = 60) -> Tuple[int, str]:
        """Run `cmd` on a node through plain `ssh -F ssh_config`: (exit code, stdout).

        stderr goes to ours, so pytest shows it when a test fails."""
        p = subprocess.run(["ssh", "-F", self.ssh_config, node_name(self._k(node)), cmd],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                           timeout=timeout)
        return p.returncode, p.stdout

    def kill_node(self, node: Node) -> None:
        """The node dies: its sshd, every session on it (ControlMaster connections to it
        drop) and every process started there, all with SIGKILL. New connections are
        refused until `restart_node`."""
        k = self._k(node)
        pids = self._stop_all(k)  # nothing on the node runs on while the others are killed
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        self._frozen.discard(k)
        self._reap(k)
        _wait_dead(pids)  # signals are delivered asynchronously; return only once all is gone
        _remove(self._pid_file(k))

    def restart_node(self, node: Node) -> None:
        """Start the node again (killing it first if it runs), same address, port and host
        key, so the known_hosts file stays right."""
        k = self._k(node)
        self.kill_node(k)
        procs = {k: self._spawn(k)}
        self._wait_ready(procs)

    def freeze_node(self, node: Node) -> None:
        """The node hangs (SIGSTOP to its sshd and everything on it): connections are
        accepted by the kernel but never answered, so ssh gives up after ConnectTimeout
        and running sessions stall. `thaw_node` resumes it."""
        k = self._k(node)
        self._stop_all(k)
        self._frozen.add(k)

    def _stop_all(self, k: int) -> Set[int]:
        """SIGSTOP everything on node k, again until no process appears that the previous
        pass missed (one forked meanwhile): then the node as a whole stands still, and
        killing its processes one by one cannot let a job finish its command between two
        kills."""
        stopped: Set[int] = set()
        while True:
            new = self._node_pids(k) - stopped
            if not new:
                return stopped
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            stopped |= new

    def drop_connections(self, node: Node) -> None:
        """The node's ssh connections break, as when the network drops them: the
        sshd process of each connection is killed. The node itself (its listener
        and what its sessions started) runs on, so it answers new connections."""
        k = self._k(node)
        listener = self._listener(k)
        for pid, parent in _parents().items():
            if parent == listener:
                _signal(pid, signal.SIGKILL)

    def thaw_node(self, node: Node) -> None:
        k = self._k(node)
        for pid in self._node_pids(k):
            _signal(pid, signal.SIGCONT)
        self._frozen.discard(k)

    def node_up(self, node: Node) -> bool:
        """Whether the node's sshd runs (frozen counts as running)."""
        return self._listener(self._k(node)) is not None

    def heal(self) -> None:
        """Bring every node back to running: thaw frozen ones, restart dead ones."""
        for k in range(1, self.n + 1):
            if k in self._frozen:
                self.thaw_node(k)
            if not self.node_up(k):
                self.restart_node(k)

    def stop(self) -> None:
        """Kill every node and remove the cluster's directory. Safe to call twice."""
        for k in range(1, self.n + 1):
            self.kill_node(k)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- files ---------------------------------------------------------------------------

    def _k(self, node: Node) -> int:
        if isinstance(node, str):
            prefix, _, number = node.rpartition("-")
            k = int(number) if prefix == "node" and number.isdigit() else 0
        else:
            k = node
        if not 1 <= k <= self.n:
            raise ValueError(f"no node {node!r} in a cluster of {self.n}")
        return k

    def _node_dir(self, k: int) -> str:
        return os.path.join(self.dir, node_name(k))

    def _pid_file(self, k: int) -> str:
        return os.path.join(self._node_dir(k), "sshd.pid")

    def _sshd_config(self, k: int) -> str:
        return os.path.join(self._node_dir(k), "sshd_config")

    def _log(self, k: int) -> str:
        return os.path.join(self._node_dir(k), "sshd.log")

    def _save(self) -> None:
        state = {"n": self.n, "port": self.port, "user": self.user, "sshd": self.sshd,
                 "owner": self.owner, "sshd_options": self.sshd_options}
        _write(os.path.join(self.dir, STATE), json.dumps(state) + "\n")

    @classmethod
    def load(cls, dir: str) -> "Cluster":
        """The cluster described by `dir` (to stop one started by another process)."""
        dir = os.path.abspath(dir)
        with open(os.path.join(dir, STATE)) as f:
            s = json.load(f)
        return cls(dir, s["n"], s["port"], s["user"], s["sshd"], s["owner"], s.get("sshd_options"))

    def _write_node_config(self, k: int) -> None:
        nd = self._node_dir(k)
        name = node_name(k)
        _write(self._sshd_config(k), "\n".join([
            f"# {name} of a pegpar test cluster (tests/cluster.py)",
            f"ListenAddress {node_address(k)}:{self.port}",
            f"HostKey {nd}/ssh_host_ed25519_key",
            f"PidFile {self._pid_file(k)}",
            f"AuthorizedKeysFile {self.dir}/authorized_keys",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            # the keys live under /tmp, which is world-writable: StrictModes would refuse them
            "StrictModes no",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            # a home of its own: the login shell of the test user (root, say) would
            # otherwise run that user's ~/.bashrc, whose side effects (a tool's lock
            # in the home directory) all nodes would share
            f"SetEnv NODE={name} PEGPAR_TEST_NODE={name} PEGPAR_TEST_CLUSTER={self.dir} HOME={nd}/home",
            *(f"{key} {value}" for key, value in self.sshd_options.items()),
            "",
        ]))

    def _write_client_files(self) -> None:
        lines = []
        for k in range(1, self.n + 1):
            with open(os.path.join(self._node_dir(k), "ssh_host_ed25519_key.pub")) as f:
                key = " ".join(f.read().split()[:2])
            lines.append(f"[{node_address(k)}]:{self.port} {key}")
        _write(self.known_hosts, "\n".join(lines) + "\n")
        hosts = [f"Host {node_name(k)}\n  HostName {node_address(k)}\n  Port {self.port}\n"
                 for k in range(1, self.n + 1)]
        _write(self.ssh_config, "".join([
            f"# pegpar test cluster of {self.n} nodes (tests/cluster.py): ssh -F {self.ssh_config} node-1\n",
            *hosts,
            "Host node-*\n",
            f"  User {self.user}\n",
            f"  IdentityFile {self.identity}\n",
            "  IdentitiesOnly yes\n",
            "  IdentityAgent none\n",
            f"  UserKnownHostsFile {self.known_hosts}\n",
            "  GlobalKnownHostsFile /dev/null\n",
            "  StrictHostKeyChecking yes\n",
            "  UpdateHostKeys no\n",
            "  BatchMode yes\n",
            "  ConnectTimeout 5\n",
        ]))

    # -- processes -----------------------------------------------------------------------

    def _spawn(self, k: int) -> subprocess.Popen:
        log = open(self._log(k), "ab")
        try:
            # own session: a Ctrl-C meant for pytest must not kill nodes before teardown
            p = subprocess.Popen([self.sshd, "-D", "-f", self._sshd_config(k), "-E", self._log(k)],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
        finally:
            log.close()
        self._procs[k] = p
        return p

    def _wait_ready(self, procs: Dict[int, subprocess.Popen]) -> None:
        """Wait until every sshd listens: sshd writes its pid file after listen()."""
        deadline = time.monotonic() + START_TIMEOUT
        waiting = dict(procs)
        while waiting:
            for k, p in list(waiting.items()):
                if p.poll() is not None:
                    log = _read(self._log(k))
                    if "Address already in use" in log:
                        raise PortBusy(log)
                    raise RuntimeError(f"sshd of {node_name(k)} exited ({p.returncode}):\n{log}")
                if _read(self._pid_file(k)).strip() == str(p.pid):
                    del waiting[k]
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start within {START_TIMEOUT:g} s: "
                                   + ", ".join(node_name(k) for k in waiting))
            if waiting:
                time.sleep(0.005)

    def _listener(self, k: int) -> Optional[int]:
        """The node's running sshd, checked by its command line (pids get reused)."""
        try:
            pid = int(_read(self._pid_file(k)).strip())
        except ValueError:
            return None
        if not _alive(pid):
            return None
        cmdline = _proc_cmdline(pid)
        return pid if cmdline is None or self._sshd_config(k) in cmdline else None

    def _node_pids(self, k: int) -> Set[int]:
        """The node's sshd, its connections and sessions, and whatever was started there
        (found by the environment sshd gave it, even when its parent is gone)."""
        table = _parents()
        pids: Set[int] = set()
        listener = self._listener(k)
        if listener is not None:
            pids.add(listener)
        p = self._procs.get(k)
        if p is not None and p.poll() is None:  # still starting: no pid file yet
            pids.add(p.pid)
        marks = {f"PEGPAR_TEST_CLUSTER={self.dir}".encode(), f"PEGPAR_TEST_NODE={node_name(k)}".encode()}
        pids |= {pid for pid in table if pid != os.getpid() and marks <= _environ(pid)}
        return pids | _descendants(pids, table)

    def _reap(self, k: int) -> None:
        p = self._procs.pop(k, None)
        if p is not None:
            try:
                p.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass


# -- starting and stopping -----------------------------------------------------------------


def start(n: int, dir: Optional[str] = None, owner: Optional[int] = -1,
          sshd_options: Optional[Dict[str, str]] = None) -> Cluster:
    """Start `n` nodes and return once every one accepts connections.

    `dir`: where the cluster's files go (created; must be empty or hold an old cluster,
    which is stopped first); default a fresh directory in `runtime_root()`. `owner`: the
    pid whose death lets the next `start` clean the cluster up (-1: this process; None:
    nobody, the cluster lives until `stop`). `sshd_options`: sshd_config settings added to
    every node's (a large fleet raises MaxStartups and MaxSessions, as its admins would)."""
    if not 1 <= n <= 250:
        raise ValueError("a cluster has 1 to 250 nodes")
    sshd = find_sshd()
    if sshd is None:
        raise RuntimeError("sshd not found: install openssh-server")
    reap_stale(runtime_root())
    if dir is None:
        dir = tempfile.mkdtemp(prefix="run-", dir=runtime_root())
    else:
        dir = os.path.abspath(dir)
        if os.path.exists(os.path.join(dir, STATE)):
            Cluster.load(dir).stop()
        elif os.path.isdir(dir) and os.listdir(dir):
            raise RuntimeError(f"{dir} is not empty and holds no cluster")
        os.makedirs(dir, mode=0o700, exist_ok=True)
    if any(c.isspace() for c in dir):
        raise ValueError(f"sshd_config cannot name paths with spaces: {dir!r}")
    os.chmod(dir, 0o700)
    if owner == -1:
        owner = os.getpid()
    c = Cluster(dir, n, 0, pwd.getpwuid(os.getuid()).pw_name, sshd,
                None if owner is None else [owner, _start_time(owner)], sshd_options)
    c._save()  # first, so a crash from here on leaves something the next start can reap
    try:
        _start(c)
    except BaseException:
        c.stop()
        raise
    return c


def _start(c: Cluster) -> None:
    if os.getuid() == 0:
        # sshd's privilege separation directory on Debian; missing in fresh containers
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    keygens = [_keygen(c.identity, "pegpar-test-user")]
    for k in range(1, c.n + 1):
        os.makedirs(os.path.join(c._node_dir(k), "home"), mode=0o700)
        keygens.append(_keygen(os.path.join(c._node_dir(k), "ssh_host_ed25519_key"), node_name(k)))
    for p in keygens:
        _, err = p.communicate(timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"ssh-keygen failed: {err.decode(errors='replace')}")
    shutil.copyfile(c.identity + ".pub", os.path.join(c.dir, "authorized_keys"))
    addresses = [node_address(k) for k in range(1, c.n + 1)]
    for _ in range(20):
        c.port = _free_port(addresses)
        for k in range(1, c.n + 1):
            c._write_node_config(k)
        try:
            c._wait_ready({k: c._spawn(k) for k in range(1, c.n + 1)})
            break
        except PortBusy:  # taken between the check and sshd's bind: try another
            for k in range(1, c.n + 1):
                c.kill_node(k)
    else:
        raise RuntimeError("no free port found for the cluster")
    c._write_client_files()
    c._save()


def stop(dir: str) -> None:
    """Stop the cluster in `dir` and remove `dir`."""
    Cluster.load(dir).stop()


def reap_stale(root: str) -> List[str]:
    """Stop the clusters under `root` whose owner process is gone; return their dirs."""
    reaped = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        try:
            if not os.path.exists(os.path.join(path, STATE)):
                # crashed before its first write, or half removed; young ones may be starting
                if name.startswith("run-") and time.time() - os.lstat(path).st_mtime > 3600:
                    shutil.rmtree(path, ignore_errors=True)
                continue
            c = Cluster.load(path)
        except (OSError, ValueError, KeyError):  # another start is reaping it right now
            continue
        if c.owner is not None and not _owner_alive(c.owner):
            c.stop()
            reaped.append(path)
    return reaped


# -- small helpers ---------------------------------------------------------------------------


def _keygen(path: str, comment: str) -> subprocess.Popen:
    return subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _free_port(addresses: List[str]) -> int:
    """A random port free on every address. Only a hint: `_start` retries if it races."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(*PORTS)
        if all(_bindable(a, port) for a in addresses):
            return port
    raise RuntimeError(f"no port in {PORTS} is free on {addresses[0]}..{addresses[-1]}")


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as sshd does
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _write(path: str, text: str) -> None:
    """Write a private file (ssh refuses configs and keys others can write or read)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _proc_stat(pid: int) -> Optional[List[str]]:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    stat = _read(f"/proc/{pid}/stat")
    return stat[stat.rfind(")") + 2:].split() if stat else None


def _alive(pid: int) -> bool:
    if os.path.isdir("/proc"):
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X")  # a zombie holds no port
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _wait_dead(pids: Set[int]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.002)


def _start_time(pid: int) -> int:
    stat = _proc_stat(pid)
    return int(stat[19]) if stat else 0


def _owner_alive(owner: List[int]) -> bool:
    pid, started = owner
    return _alive(pid) and _start_time(pid) == started


def _proc_cmdline(pid: int) -> Optional[str]:
    if not os.path.isdir("/proc"):
        return None
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ")


def _environ(pid: int) -> Set[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return set(f.read().split(b"\0"))
    except OSError:
        return set()


def _parents() -> Dict[int, int]:
    """pid -> parent pid of every process."""
    table = {}
    if os.path.isdir("/proc"):
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _proc_stat(int(name))
                if stat:
                    table[int(name)] = int(stat[1])
        return table
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, ppid = line.split()
        table[int(pid)] = int(ppid)
    return table


def _descendants(roots: Set[int], table: Dict[int, int]) -> Set[int]:
    children: Dict[int, List[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    found: Set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# -- by hand ---------------------------------------------------------------------------------

USAGE = """usage: python tests/cluster.py start N DIR    start N sshd nodes with their files in DIR
       python tests/cluster.py stop DIR       stop them and remove DIR"""


def main(argv: List[str]) -> int:
    if len(argv) == 3 and argv[0] == "start" and argv[1].isdigit():
        c = start(int(argv[1]), argv[2], owner=None)
        last = c.nodes[-1]
        print(f"started {c.n} sshd nodes, {c.nodes[0]} .. {last}, on "
              f"{c.address(1)} .. {c.address(c.n)} port {c.port}, as user {c.user}\n"
              f"ssh config:  {c.ssh_config}\n"
              f"try:         ssh -F {c.ssh_config} {last} 'echo $NODE'\n"
              f"with pegpar: pegpar q --ssh-config {c.ssh_config} ...   (hosts.yaml names {c.nodes[0]} ...)\n"
              f"sshd logs:   {c.dir}/node-K/sshd.log\n"
              f"stop:        python {sys.argv[0]} stop {c.dir}")
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        if not os.path.exists(os.path.join(argv[1], STATE)):
            print(f"no cluster in {argv[1]}", file=sys.stderr)
            return 1
        stop(argv[1])
        print(f"stopped; removed {os.path.abspath(argv[1])}")
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
