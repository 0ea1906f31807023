"""Progress, with tqdm: a live bar on a terminal; plain lines (tqdm's same meter, one per
line) every 20% when the output is not a terminal, so CI logs and log files stay short and
hold no carriage returns.

- Progress: one training epoch, with loss, accuracy and images/s. Its rate and ETA count
  from the end of the epoch's first batch, which may include loading or compiling kernels
  and would otherwise make an ETA of hours.
- CompileProgress: "compiling CPU kernels (first run only): 12/26", while a first run
  compiles its numba kernels (compile_kernels.py).
"""
import sys
import time

from tqdm import tqdm

#: Lines per epoch when the output is not a terminal.
PLAIN_LINES_PER_EPOCH = 5
#: The clock of the plain lines (a test replaces it).
clock = time.monotonic


class Progress:
    """One epoch's status: batches done, loss, accuracy and images/s, with tqdm's rate and ETA
    from the first batch of this process on."""

    def __init__(self, epoch, epochs, total, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self.description = f"epoch {epoch + 1}/{epochs}"
        self.tty = self.stream.isatty()
        self.bar = None
        self.first = self.started = None     # the first batch done here, and when
        self.last_part = -1

    def update(self, batch, loss, acc, images_per_sec, final=False):
        status = f"loss {loss:.4f} acc {acc:.4f} {images_per_sec:.0f} img/s"
        final = final or batch >= self.total
        if self.first is None:
            self.first, self.started = batch, clock()
            if self.tty:                      # the bar's clock starts now, at `initial` batches
                self.bar = tqdm(total=self.total, initial=batch, desc=self.description, unit="batch",
                                file=self.stream, dynamic_ncols=True, leave=True)
        if self.bar is not None:
            self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(batch - self.bar.n)                        # tqdm limits the redraws
            if final:
                self.bar.close()
            return
        part = PLAIN_LINES_PER_EPOCH * batch // max(self.total, 1)
        if final or part > self.last_part:
            meter = tqdm.format_meter(batch, self.total, clock() - self.started,
                                      prefix=self.description, unit="batch", postfix=status,
                                      ncols=0, initial=self.first)
            self.stream.write(meter + "\n")
            self.stream.flush()
            self.last_part = part


class CompileProgress:
    """A callable(done, total) that shows "compiling CPU kernels (first run only): done/total":
    a bar on a terminal, else a line at the start, at every quarter and at the end."""

    DESCRIPTION = "compiling CPU kernels (first run only)"

    def __init__(self, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.bar, self.last_part = None, -1

    def __call__(self, done, total):
        if self.stream.isatty():
            if self.bar is None:
                self.bar = tqdm(total=total, desc=self.DESCRIPTION, file=self.stream, leave=True,
                                bar_format="{desc}: {n}/{total} {bar} [{elapsed}]", dynamic_ncols=True)
            self.bar.update(done - self.bar.n)
            if done >= total:
                self.bar.close()
            return
        part = 4 * done // max(total, 1)
        if part > self.last_part:
            self.stream.write(f"{self.DESCRIPTION}: {done}/{total}\n")
            self.stream.flush()
            self.last_part = part
