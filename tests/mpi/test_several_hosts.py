"""`tinyalex train` over two hosts, on one machine: each rank in its own network namespace
(tests/mpi/netns.py), started by hydra's ssh launcher, every byte between the ranks on a
veth pair over TCP. Skipped without root, `ip netns`, mpi4py or mpiexec.

Then the lost-rank rule of tinyalex.train.parallel.distributed and the liveness helper's
loop (tinyalex.train.parallel.liveness), without MPI."""
import os
import queue
import select
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from netns import TCP_ENV, Hosts, unavailable
from test_distributed import TIMING, _env, _metrics, _mpiexec, _train_args
from tinyalex.train.parallel import distributed, liveness

#: Two epochs of 8 batches of 32 in micro-batches of 16: one per rank, as in one process.
EPOCHS, BATCHES = 2, 8


def _args(out, *extra):
    return _train_args(out, "--micro-batch", "16", "--epochs", str(EPOCHS), *extra)


@pytest.fixture
def hosts():
    why = unavailable()
    if why:
        pytest.skip(why)
    with Hosts() as made:
        yield made


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The one-process run the two hosts must reproduce: its --out folder."""
    _mpiexec()                                    # skip before training if MPI is missing
    out = tmp_path_factory.mktemp("one")
    done = subprocess.run([sys.executable, *_args(out)], env=_env(), timeout=600,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def _same_metrics(run, reference):
    """Training every bit; the test loss to float64 rounding (each rank sums its shard)."""
    ran, expected = _metrics(run), _metrics(reference)
    assert len(ran) == len(expected) == EPOCHS
    for a, b in zip(ran, expected):
        assert {k: v for k, v in a.items() if k not in TIMING + ("test_loss",)} == \
            {k: v for k, v in b.items() if k not in TIMING + ("test_loss",)}
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-12, abs=0)


def _gradient_bytes():
    from tinyalex.train import models
    model = models.create_model("cpu-alexnet", 10)
    return 4 * (sum(p.array.size for p in model.parameters()) + len(distributed.EXTRAS))


class Job:
    """A two-host `tinyalex train` whose output (stdout and stderr) is read as it comes."""

    def __init__(self, hosts, out, env):
        self.process = subprocess.Popen(hosts.mpiexec(_mpiexec(), 2) + [sys.executable, *_args(out)],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines, self.seen = queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text, timeout=600):
        """Read until a line holds `text` (training has got that far)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, "the job ended before printing " + repr(text) + ":\n" + self.output()
            self.seen.append(line)
            if text in line:
                return

    def end(self, timeout):
        """Wait for the job to end: (exit code, seconds it took)."""
        start = time.monotonic()
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        return code, time.monotonic() - start

    def output(self):
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return "".join(self.seen)


def _no_process_left(hosts, timeout=10):
    deadline = time.monotonic() + timeout
    while (hosts.pids(0) or hosts.pids(1)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hosts.pids(0) == [] and hosts.pids(1) == []


def test_two_hosts_train_the_one_process_metrics_bit_for_bit_over_tcp(hosts, one_process, tmp_path):
    before = hosts.link_bytes(1)
    done = subprocess.run(hosts.mpiexec(_mpiexec(), 2) + [sys.executable, *_args(tmp_path)],
                          env=dict(_env(), **TCP_ENV), timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"epoch {EPOCHS}/{EPOCHS}: train loss") == 1
    assert "lost rank" not in done.stderr                  # the ranks ended in order
    _same_metrics(tmp_path, one_process)
    from tinyalex.train.checkpoint import load_checkpoint, read_checkpoint_meta
    assert read_checkpoint_meta(tmp_path / "checkpoint.npz")["world_size"] == 2
    (two, _, _), (one, _, _) = (load_checkpoint(d / "checkpoint.npz") for d in (tmp_path, one_process))
    for name, array in one.items():
        np.testing.assert_array_equal(two[name], array, err_msg=name)
    # every step's gradients crossed the veth, both ways (shared memory would leave ~10 kB)
    received, sent = (after - start for after, start in zip(hosts.link_bytes(1), before))
    least = EPOCHS * BATCHES * _gradient_bytes()
    assert received > least and sent > least, (received, sent, least)


KILLS = 3     # a killed host, again and again: the line must not depend on luck


def test_a_killed_host_ends_the_job_within_seconds_and_rank_0_names_it(hosts, tmp_path):
    """Every process of host 2 killed (its proxy and its rank), KILLS times: mpiexec sees the
    connections close and ends the job at once, and rank 0's liveness helper, which saw
    rank 1's connection close, has named rank 1 and its host in time. Nothing is left behind
    on either host."""
    for attempt in range(KILLS):
        job = Job(hosts, tmp_path / str(attempt), dict(_env(), **TCP_ENV))
        job.wait_for(f"epoch 1/{EPOCHS}:")              # a progress line: training runs
        hosts.kill(1)
        code, seconds = job.end(timeout=120)
        output = job.output()
        assert code != 0, output
        assert seconds < 10, f"the job took {seconds:.1f} s to end after host 2 died:\n{output}"
        assert (f"error on rank 0 of 2: lost rank 1 (host {hosts.addresses[1]}): its process ended"
                in output), f"attempt {attempt + 1} of {KILLS}:\n{output}"
        _no_process_left(hosts)


def test_a_liveness_channel_that_cannot_be_set_up_is_refused_on_every_rank(tmp_path):
    """Rank 0 told to listen on an address that is not its own: every rank raises the same
    error, so the job ends at once with one line, not with a rank waiting for the others."""
    env = dict(_env(), TINYALEX_LIVENESS_ADDR="192.0.2.1")     # TEST-NET-1: nobody's address
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, *_args(tmp_path)], env=env,
                          timeout=120, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("error: the liveness channel") == 1, done.stderr
    assert "rank 0 (host " in done.stderr and "cannot listen on 192.0.2.1:0" in done.stderr
    assert "TINYALEX_LIVENESS_ADDR" in done.stderr.split("cannot listen", 1)[1]


RANK_TIMEOUT_S = 20    # longer than any wait of a healthy rank in this short run


def test_a_silent_host_is_named_by_the_rank_that_waits_and_one_process_resumes(hosts, one_process,
                                                                                tmp_path):
    """Host 2's link cut, then its processes killed: no reset reaches host 1 (a host that
    loses power), so mpiexec sees nothing; rank 0 waits TINYALEX_RANK_TIMEOUT in the
    allreduce, names rank 1 and its host, and ends the job. The checkpoint of epoch 1 then
    resumes in one process on one machine, to the metrics of the uninterrupted run."""
    env = dict(_env(), **TCP_ENV, TINYALEX_RANK_TIMEOUT=str(RANK_TIMEOUT_S))
    job = Job(hosts, tmp_path, env)
    job.wait_for(f"epoch 1/{EPOCHS}: train loss")       # epoch 1 is saved
    job.wait_for(f"epoch 2/{EPOCHS}:")                  # and epoch 2 runs
    hosts.cut(1)
    hosts.kill(1)
    code, seconds = job.end(timeout=RANK_TIMEOUT_S + 120)
    output = job.output()
    assert code != 0, output
    assert f"error on rank 0 of 2: no reply from rank 1 (host {hosts.addresses[1]}) for" in output, output
    assert seconds < RANK_TIMEOUT_S + 30, f"{seconds:.0f} s:\n{output}"
    _no_process_left(hosts)
    resumed = subprocess.run([sys.executable, *_args(tmp_path, "--resume")], env=_env(), timeout=600,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resume: 1 rank (the checkpoint had 2)" in resumed.stdout
    _same_metrics(tmp_path, one_process)


# --- the lost-rank rule, without MPI ---------------------------------------------------------
class PendingRequest:
    """A request that never completes (its test fails, not hangs, if wait() never gives up)."""

    def __init__(self):
        self.deadline = time.monotonic() + 30

    def Test(self):
        assert time.monotonic() < self.deadline, "wait() kept waiting past its timeout"
        return False


def test_wait_raises_what_lost_gives_once_the_timeout_has_passed():
    now = [0.0]

    def sleep(seconds):
        now[0] += max(seconds, 0.25)
    with pytest.raises(distributed.LostRankError, match="waited 3.25"):
        distributed.wait(PendingRequest(), sleep=sleep, clock=lambda: now[0], timeout=3.0,
                         lost=lambda waited: distributed.LostRankError(f"waited {waited}"))


class FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Irecv(self, *args, **kwargs):
        return PendingRequest()

    Isend = Ibcast = Irecv


def test_a_silent_partner_is_named_with_its_host():
    hosts = ["node-a", "node-b", "node-c", "node-d"]
    w = distributed.World(FakeComm(2, 4), hosts=hosts, timeout=0.05)
    with pytest.raises(distributed.LostRankError,
                       match=r"no reply from rank 3 \(host node-d\) for 0 s in the allreduce"):
        w.allreduce_(np.zeros(3, dtype=np.float32))          # recursive doubling: rank 2 meets 3 first
    with pytest.raises(distributed.LostRankError,
                       match=r"ranks 0 \(host node-a\), 1 \(host node-b\), 3 \(host node-d\) .* broadcast"):
        w.broadcast_(np.zeros(3, dtype=np.float32))


def test_a_silent_partner_in_a_part_of_the_job_is_named_by_its_rank_in_the_job():
    """A model-parallel column pair or replica group is a communicator of its own: a lost
    partner's number there (0 or 1) would send the user to the wrong process."""
    from tinyalex.train.parallel import model_parallel
    job = distributed.World(FakeComm(3, 4), hosts=["node-a", "node-b", "node-c", "node-d"], timeout=0.05)
    replicas = model_parallel._part_of(job, FakeComm(1, 2), [1, 3])      # column 1: job ranks 1 and 3
    with pytest.raises(distributed.LostRankError,
                       match=r"no reply from rank 1 \(host node-b\) for 0 s in the broadcast"):
        replicas.broadcast_(np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize("value, expected", [(None, distributed.RANK_TIMEOUT_S), ("", distributed.RANK_TIMEOUT_S),
                                             ("2.5", 2.5), ("0", None), ("inf", None)])
def test_rank_timeout_reads_seconds(value, expected):
    assert distributed.rank_timeout({} if value is None else {"TINYALEX_RANK_TIMEOUT": value}) == expected


@pytest.mark.parametrize("value", ["-1", "nan", "ten"])
def test_a_bad_rank_timeout_names_the_variable(value):
    from tinyalex.errors import TrainingError
    with pytest.raises(TrainingError, match=f"TINYALEX_RANK_TIMEOUT: expected seconds, a number >= 0 "
                                            rf"\(0: wait forever\), got '{value}'"):
        distributed.rank_timeout({"TINYALEX_RANK_TIMEOUT": value})


# --- the liveness helper's loop, without MPI -------------------------------------------------
class Helper:
    """liveness.watch for `rank` of `size` in a thread, with socket pairs for its peers and
    pipes for the rank's side: .others[peer] is the peer's end of each connection."""

    def __init__(self, rank, size, hosts=("node-a", "node-b", "node-c", "node-d")):
        pairs = {r: socket.socketpair() for r in range(size) if r != rank}
        self.others = {r: pair[1] for r, pair in pairs.items()}
        for sock in self.others.values():
            sock.settimeout(10)
        stdin, self.tell = os.pipe()
        self.lost, stdout = os.pipe()
        self.said, stderr = os.pipe()
        self.thread = threading.Thread(target=liveness.watch, daemon=True, args=(
            rank, size, list(hosts), {r: pair[0] for r, pair in pairs.items()}, "tinyalex",
            stdin, stdout, stderr))
        self.thread.start()

    def next_line(self, fd, timeout=10):
        """The next line the helper writes to `fd` (self.lost or self.said)."""
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], timeout)
            assert ready, f"the helper wrote no line in {timeout} s (so far {line!r})"
            line += os.read(fd, 1)
        return line

    def quiet(self, seconds=0.2):
        """True if the helper writes nothing for `seconds` (time to take a wrong turn)."""
        return not select.select([self.lost, self.said], [], [], seconds)[0]

    def end(self):
        """End the rank (the end of the helper's stdin); the helper must return."""
        os.close(self.tell)
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the helper kept watching after its rank ended"


def test_a_connection_that_closes_without_a_word_is_a_lost_rank():
    helper = Helper(rank=0, size=3)
    helper.others[1].close()                             # rank 1's process ended
    assert helper.next_line(helper.said) == (
        b"tinyalex: error on rank 0 of 3: lost rank 1 (host node-b): its process ended (killed, "
        b"crashed, or its host went down) without a word; stopping all 3 ranks\n")
    assert helper.next_line(helper.lost) == b"1\n"      # tells its rank, which MPI_Aborts
    assert helper.others[2].recv(1) == liveness.FAILING  # rank 2 must not report rank 0's end
    helper.end()


def test_rank_0_lost_is_named_by_another_rank():
    helper = Helper(rank=2, size=3)
    helper.others[0].shutdown(socket.SHUT_RDWR)
    assert b"error on rank 2 of 3: lost rank 0 (host node-a)" in helper.next_line(helper.said)
    assert helper.next_line(helper.lost) == b"0\n"
    helper.end()


def test_ranks_that_say_bye_or_fail_are_not_lost_and_the_next_one_is():
    helper = Helper(rank=0, size=4)
    helper.others[1].sendall(liveness.BYE)               # rank 1 ended normally
    helper.others[1].close()
    assert helper.quiet()
    helper.others[3].close()                             # rank 3's process ended: lost
    assert helper.next_line(helper.lost) == b"3\n"
    helper.end()


def test_a_rank_that_fails_is_passed_on_by_rank_0_and_ends_the_watch():
    helper = Helper(rank=0, size=3)
    helper.others[2].sendall(liveness.FAILING)           # rank 2 ends the job with its own error
    assert helper.others[1].recv(1) == liveness.FAILING  # MPI_Abort is coming: rank 1 stays quiet
    helper.others[2].close()
    helper.others[1].close()                             # and no end is a loss now
    assert helper.quiet()
    helper.end()


def test_the_rank_saying_bye_tells_every_peer_and_its_rank():
    helper = Helper(rank=0, size=3)
    os.write(helper.tell, liveness.BYE)
    assert [helper.others[r].recv(1) for r in (1, 2)] == [liveness.BYE, liveness.BYE]
    assert helper.next_line(helper.lost) == liveness.BYE + b"\n"    # close() waits for this
    helper.others[1].close()                             # ranks may end in any order now
    assert helper.quiet()
    helper.end()


@pytest.mark.parametrize("value, expected", [("", (None, 0)), ("node1", ("node1", 0)),
                                             ("10.0.0.1:5000", ("10.0.0.1", 5000)),
                                             ("[fd00::1]:5000", ("fd00::1", 5000)), ("fd00::1", ("fd00::1", 0))])
def test_liveness_address_reads_address_and_port(value, expected):
    assert liveness._parse_address(value) == expected


@pytest.mark.parametrize("value", ["node1:http", "node1:70000"])
def test_a_bad_liveness_address_names_the_variable(value):
    from tinyalex.errors import TrainingError
    with pytest.raises(TrainingError, match=r"TINYALEX_LIVENESS_ADDR: expected ADDRESS, ADDRESS:PORT "
                                            rf"\(a port 0-65535\) or none, got '{value}'"):
        liveness._parse_address(value)
