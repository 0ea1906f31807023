"""Two "hosts" on one machine for the MPI tests: two network namespaces joined by a veth
pair, so that MPI ranks in different namespaces can reach each other only over TCP.

    with Hosts() as hosts:                 # needs root and iproute2's `ip netns`
        subprocess.run(hosts.mpiexec(mpiexec, 2) + [sys.executable, "script.py"], env=env)

- Namespaces `tinyalex-<pid>-<n>-h1` and `-h2` (unique per process and per Hosts), each
  with `lo` up and one end of the veth pair, renamed IFACE, holding SUBNET.1 and SUBNET.2
  (a private /24 that exists only inside these namespaces: no route or address of the
  machine changes).
- `mpiexec` itself runs in host 1's namespace, as on a cluster where one launches from the
  first node, and reaches host 2 through hydra's ssh launcher: `-launcher-exec` names a
  script that hydra calls as `SCRIPT -x HOST COMMAND`, which runs COMMAND in HOST's
  namespace (`ip netns exec`) instead of over ssh. A hostfile lists the two addresses, and
  `-iface` makes the hosts' proxies reach mpiexec on IFACE's address.
- Leaving the `with` (also on an error) kills every process still in the namespaces and
  deletes them, which deletes the veth pair.

What remains shared is the machine: the same files, the same /dev/shm. MPICH's UCX
netmod therefore still picks shared memory between two namespaces unless told otherwise
(UCX_TLS, see TCP_ENV), and the byte counters of the veth (:meth:`Hosts.link_bytes`) show
which way the data went.
"""
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

SUBNET = "10.225.25"        # addresses SUBNET.1, SUBNET.2 on a /24, inside the namespaces only
IFACE = "tcp0"              # each namespace's end of the veth pair

#: UCX (MPICH's default netmod here) over TCP on IFACE, and never shared memory: UCX would
#: reach the other namespace through /dev/shm, since both live on one machine.
TCP_ENV = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": IFACE}

_made = itertools.count(1)

LAUNCHER = """#!/bin/sh
# hydra's ssh launcher runs `THIS [ssh options] HOST COMMAND...`: run COMMAND on HOST, here
# in HOST's network namespace instead of over ssh.
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1; shift
case "$host" in
{cases}
  *) echo "netns launcher: expected one of the hosts {hosts}, got '$host'" >&2; exit 255 ;;
esac
exec ip netns exec "$namespace" sh -c "$*"
"""


def unavailable():
    """Why network namespaces cannot be made here (a reason to skip), or None."""
    if os.geteuid() != 0:
        return "making network namespaces needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    probe = f"tinyalex-{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _ip(*args):
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Hosts:
    """Two namespaces joined by a veth pair (see the module's docstring); a context manager."""

    def __init__(self):
        tag = f"{os.getpid()}-{next(_made)}"
        self.namespaces = [f"tinyalex-{tag}-h{i}" for i in (1, 2)]
        self.addresses = [f"{SUBNET}.{i}" for i in (1, 2)]
        self._veth = [f"ta{tag.replace('-', 'x')}{end}"[-15:] for end in "ab"]  # IFNAMSIZ
        self._folder = None

    def __enter__(self):
        try:
            self._make()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _make(self):
        for namespace in self.namespaces:
            _ip("netns", "add", namespace)
        _ip("link", "add", self._veth[0], "type", "veth", "peer", "name", self._veth[1])
        for namespace, veth, address in zip(self.namespaces, self._veth, self.addresses):
            _ip("link", "set", veth, "netns", namespace)
            _ip("-n", namespace, "link", "set", veth, "name", IFACE)
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", IFACE)
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("-n", namespace, "link", "set", IFACE, "up")
        self._folder = tempfile.mkdtemp(prefix="tinyalex-netns-")
        cases = "\n".join(f"  {a}) namespace={n} ;;" for a, n in zip(self.addresses, self.namespaces))
        self.launcher = os.path.join(self._folder, "launcher.sh")
        with open(self.launcher, "w") as f:
            f.write(LAUNCHER.format(cases=cases, hosts=", ".join(self.addresses)))
        os.chmod(self.launcher, 0o755)
        self.hostfile = os.path.join(self._folder, "hosts")
        with open(self.hostfile, "w") as f:                  # one rank per host
            f.write("".join(f"{a}:1\n" for a in self.addresses))

    def mpiexec(self, mpiexec, ranks):
        """The command line that starts `ranks` ranks over the hosts (append the program)."""
        return ["ip", "netns", "exec", self.namespaces[0], mpiexec, "-launcher", "ssh",
                "-launcher-exec", self.launcher, "-f", self.hostfile, "-iface", IFACE, "-n", str(ranks)]

    def pids(self, host):
        """The processes in host `host`'s namespace (0 or 1)."""
        out = subprocess.run(["ip", "netns", "pids", self.namespaces[host]], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self, host):
        """SIGKILL every process of the host, as a host that dies."""
        for pid in self.pids(host):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cut(self, host):
        """Take the host's link down: from now on nothing it sends reaches the other host,
        not even the resets of its closing connections (a host that loses power)."""
        _ip("-n", self.namespaces[host], "link", "set", IFACE, "down")

    def link_bytes(self, host):
        """(received, sent) bytes on the host's end of the veth pair, since it was made."""
        stats = json.loads(_ip("-j", "-s", "-n", self.namespaces[host], "link", "show", "dev", IFACE))
        return stats[0]["stats64"]["rx"]["bytes"], stats[0]["stats64"]["tx"]["bytes"]

    def close(self, grace_s=5.0):
        """Kill what still runs in the namespaces, then delete them (the veth pair goes with
        them) and the launcher's folder."""
        for host in range(len(self.namespaces)):
            self.kill(host)
        deadline = time.monotonic() + grace_s              # let the killed processes go
        while any(self.pids(h) for h in range(2)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        # a pair made but not yet moved (a failure half way through _make) is in the root
        subprocess.run(["ip", "link", "delete", self._veth[0]], capture_output=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
