"""Which rank died: a TCP connection from every rank to rank 0, beside MPI, watched by a helper.

MPI over TCP never tells a rank that its peer's process ended, and hydra's ``mpiexec`` kills
the survivors within milliseconds without saying why (docs/pitfalls.md#lost-host). A killed
process's kernel closes its sockets, though, so the other end of a plain TCP connection reads
end-of-file (or a reset) at once. :func:`open_channel` (called by ``distributed.world()``)
connects every rank to rank 0 and hands the connections to a helper process per rank
(this file run as a script, standard library only). The helper blocks in ``select`` (no
polling: it costs nothing until something arrives). When a connection closes without a
word, it prints the line naming the lost rank and tells its rank, which MPI_Aborts the job.
A process, not a thread: a thread would need the GIL, which a rank's Numba kernels hold while
they run, and by then mpiexec may have killed the rank, its line unsaid.

The rank talks to its helper through the helper's stdin, one byte each, so that ending on
purpose is never taken for a loss; the helper passes it to the peers:

- ``BYE`` at a normal exit (:meth:`Channel.close`, at exit before MPI_Finalize): the peers
  stop watching this rank's connection.
- ``FAILING`` when a rank's own error ends the job (``distributed.abort_on_error``) or a lost
  rank does: MPI_Abort is coming, so no rank reports the others' ends. Rank 0's helper
  passes a FAILING on to every other rank.
- The end of stdin: the rank's process ended, and the helper ends at once, which closes the
  connections (so the peers learn of a rank killed while its helper lives).

TINYALEX_LIVENESS_ADDR picks where rank 0 listens: ``ADDRESS``, ``ADDRESS:PORT`` (a port the
firewall lets through) or ``none`` (no channel). By default rank 0 listens on every interface
at a free port, and the other ranks connect to rank 0's host name as ``mpiexec`` knows it
(the hostfile's name, which every host must reach), or to 127.0.0.1 on rank 0's own host.
"""
import json
import os
import secrets
import selectors
import socket
import subprocess
import sys
import threading

BYE, FAILING = b"B", b"F"

#: Seconds a rank tries to connect to rank 0, and rank 0 waits for the connections.
CONNECT_TIMEOUT_S = 30.0

_TOKEN_BYTES = 16           # a job's secret: a stray connection to rank 0's port is dropped


class Channel:
    """A rank's side of the channel: its helper process, told BYE or FAILING through stdin,
    and a thread that blocks reading the helper's stdout, where the helper writes the number
    of a lost rank; on_lost(rank) is then called in that thread (it should end the job)."""

    def __init__(self, helper, on_lost):
        self.helper, self.on_lost = helper, on_lost
        self._said_bye = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="tinyalex-liveness", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def close(self, timeout=2.0):
        """A normal exit: the helper says BYE to every peer (waited for: it dies with this
        process) and reports no loss from now on."""
        self._tell(BYE)
        self._said_bye.wait(timeout)

    def failing(self):
        """This rank ends the job on purpose: the helper says FAILING to every peer."""
        self._tell(FAILING)

    def _tell(self, what):
        try:
            self.helper.stdin.write(what)
            self.helper.stdin.flush()
        except (OSError, ValueError):           # the helper is gone: nothing left to tell
            pass

    def _listen(self):
        for line in self.helper.stdout:         # blocks; ends with the helper
            if line.strip() == BYE:
                self._said_bye.set()
            elif line.strip():
                self.on_lost(int(line))


def watch(rank, size, hosts, peers, command="tinyalex", stdin=0, stdout=1, stderr=2):
    """The helper's loop. peers: {rank: connected socket}; stdin, stdout, stderr: file
    descriptors (the rank's commands, the lost rank's number to the rank, the line for the
    user). Returns when the rank's process ends (the end of stdin)."""
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, None)
    for peer, sock in peers.items():
        selector.register(sock, selectors.EVENT_READ, peer)
    ending = False

    def say(what, skip=None):
        for peer, sock in peers.items():
            if peer != skip:
                try:
                    sock.sendall(what)
                except OSError:                  # that peer is gone already
                    pass
    while True:
        for key, _ in selector.select():        # blocks until the rank or a peer speaks
            if key.data is None:                 # the rank: BYE, FAILING, or its end
                said = os.read(stdin, 1)
                if not said:
                    return
                ending = True
                say(said)
                if said == BYE:
                    os.write(stdout, BYE + b"\n")
                continue
            peer = key.data
            try:
                said = key.fileobj.recv(1)
            except OSError:                      # a reset: the same as an end of file
                said = b""
            selector.unregister(key.fileobj)
            if said == FAILING and rank == 0:   # tell the others before MPI_Abort
                say(FAILING, skip=peer)
            if said in (BYE, FAILING) or ending:
                ending = ending or said == FAILING
                continue
            ending = True
            if rank == 0:                        # the job ends: the others must not report rank 0
                say(FAILING, skip=peer)
            os.write(stderr, (f"{command}: error on rank {rank} of {size}: lost rank {peer} "
                              f"(host {hosts[peer]}): its process ended (killed, crashed, or its "
                              f"host went down) without a word; stopping all {size} ranks\n").encode())
            os.write(stdout, f"{peer}\n".encode())


def _start_helper(rank, size, hosts, peers, on_lost):
    """Run this file as the helper with the connections `peers`, then close the rank's
    copies of them (only the helper holds them: the peers see them close when it ends)."""
    fds = {peer: sock.fileno() for peer, sock in peers.items()}
    settings = json.dumps({"rank": rank, "size": size, "hosts": hosts, "peers": fds})
    # -I -S: the standard library only (no tinyalex, no numpy: it starts in milliseconds);
    # its own session, so that a Ctrl-C meant for the ranks does not end it
    helper = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), settings],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=list(fds.values()),
                              start_new_session=True)
    for sock in peers.values():
        sock.close()
    return Channel(helper, on_lost).start()


def open_channel(comm, hosts, on_lost, environ=None):
    """Connect every rank of `comm` (an mpi4py communicator, collectively) to rank 0 and start
    watching; returns the :class:`Channel`, or None with TINYALEX_LIVENESS_ADDR=none.

    hosts: each rank's host name as mpiexec knows it. Raises TrainingError on every rank
    alike (so no rank waits for another) when the channel cannot be set up."""
    from tinyalex.errors import TrainingError
    raw = (os.environ if environ is None else environ).get("TINYALEX_LIVENESS_ADDR", "").strip()
    if raw.lower() == "none":
        return None
    rank, size = comm.Get_rank(), comm.Get_size()
    address, port = _parse_address(raw)
    listener = token = problem = None
    if rank == 0:
        token = secrets.token_bytes(_TOKEN_BYTES)
        try:
            listener = _listen(address, port)
            port = listener.getsockname()[1]
        except OSError as exc:
            problem = f"rank 0 (host {hosts[0]}) cannot listen on {address or 'any address'}:{port}: {exc}"
    port, token, problem = comm.bcast((port, token, problem), root=0)
    peers = {}
    if rank != 0 and problem is None:
        target = address or ("127.0.0.1" if hosts[rank] == hosts[0] else hosts[0])
        try:
            sock = socket.create_connection((target, port), timeout=CONNECT_TIMEOUT_S)
            sock.sendall(token + rank.to_bytes(4, "big"))
            sock.settimeout(None)
            peers[0] = sock
        except OSError as exc:
            problem = f"rank {rank} (host {hosts[rank]}) cannot connect to rank 0 at {target}:{port}: {exc}"
    problems = [p for p in comm.allgather(problem) if p]
    if rank == 0 and not problems:
        try:
            peers = _accept(listener, token, size)
        except OSError as exc:
            problems = [f"rank 0 (host {hosts[0]}): {exc}"]
    if listener is not None:
        listener.close()
    problems = comm.bcast(problems, root=0)
    if problems:
        for sock in peers.values():
            sock.close()
        raise TrainingError(
            "the liveness channel (a TCP connection from every rank to rank 0, which names a "
            f"rank whose process dies): {'; '.join(sorted(set(problems)))}. Set "
            "TINYALEX_LIVENESS_ADDR to an ADDRESS[:PORT] of rank 0's host that every host "
            "can reach, or to none to go without (a lost host is then named only after "
            "TINYALEX_RANK_TIMEOUT)")
    return _start_helper(rank, size, hosts, peers, on_lost)


def _parse_address(raw):
    """TINYALEX_LIVENESS_ADDR as (address or None, port): 'node1', 'node1:5000', '[::1]:5000'."""
    if not raw:
        return None, 0
    host, colon, port = raw.rpartition(":")
    if not colon or (host.count(":") and not host.endswith("]")):   # no port, or bare IPv6
        host, port = raw, "0"
    try:
        number = int(port)
        if not 0 <= number < 65536:
            raise ValueError
    except ValueError:
        from tinyalex.errors import TrainingError
        raise TrainingError("TINYALEX_LIVENESS_ADDR: expected ADDRESS, ADDRESS:PORT (a port "
                            f"0-65535) or none, got {raw!r}") from None
    return host.strip("[]"), number


def _listen(address, port):
    if address is None:          # every interface, IPv4 and IPv6 where the system can
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        return socket.create_server(("", port))
    family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((address, port), family=family)


def _accept(listener, token, size):
    """Rank 0: a connection from each of ranks 1..size-1 that sends the job's token."""
    listener.settimeout(CONNECT_TIMEOUT_S)
    peers = {}
    try:
        while len(peers) < size - 1:
            sock, _ = listener.accept()
            sock.settimeout(CONNECT_TIMEOUT_S)
            hello = _read(sock, _TOKEN_BYTES + 4)
            rank = int.from_bytes(hello[_TOKEN_BYTES:], "big")
            if hello[:_TOKEN_BYTES] != token or not 0 < rank < size or rank in peers:
                sock.close()                         # not one of this job's ranks
                continue
            sock.settimeout(None)
            peers[rank] = sock
    except socket.timeout:
        missing = sorted(set(range(1, size)) - set(peers))
        raise OSError(f"ranks {missing} connected but did not say hello within "
                      f"{CONNECT_TIMEOUT_S:.0f} s") from None
    return peers


def _read(sock, count):
    data = b""
    while len(data) < count:
        more = sock.recv(count - len(data))
        if not more:
            break
        data += more
    return data


def _die_with_parent():
    """Linux: the kernel kills this process when its parent (the rank) ends, so the peers
    see the connections close without waiting for this process to read the end of stdin."""
    try:
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":                     # the helper (see _start_helper)
    settings = json.loads(sys.argv[1])
    _die_with_parent()
    watch(settings["rank"], settings["size"], settings["hosts"],
          {int(peer): socket.socket(fileno=fd) for peer, fd in settings["peers"].items()})
    os._exit(0)                                 # at once: the peers see the connections close
