"""The progress of a training epoch, with tqdm: a live bar with rate and ETA on a terminal;
plain lines (tqdm's same meter, one per line) every 20% when the output is not a terminal,
so CI logs and log files stay short and hold no carriage returns."""
import sys
import time

from tqdm import tqdm

#: Lines per epoch when the output is not a terminal.
PLAIN_LINES_PER_EPOCH = 5


class Progress:
    """One epoch's status: batches done, loss, accuracy and images/s, with tqdm's rate and ETA."""

    def __init__(self, epoch, epochs, total, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self.description = f"epoch {epoch + 1}/{epochs}"
        self.tty = self.stream.isatty()
        self.bar = tqdm(total=total, desc=self.description, unit="batch", file=self.stream,
                        dynamic_ncols=True, leave=True) if self.tty else None
        self.started, self.last_part = time.monotonic(), -1

    def update(self, batch, loss, acc, images_per_sec, final=False):
        status = f"loss {loss:.4f} acc {acc:.4f} {images_per_sec:.0f} img/s"
        final = final or batch >= self.total
        if self.bar is not None:
            self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(batch - self.bar.n)                        # tqdm limits the redraws
            if final:
                self.bar.close()
            return
        part = PLAIN_LINES_PER_EPOCH * batch // max(self.total, 1)
        if final or part > self.last_part:
            meter = tqdm.format_meter(batch, self.total, time.monotonic() - self.started,
                                      prefix=self.description, unit="batch", postfix=status,
                                      ncols=0)
            self.stream.write(meter + "\n")
            self.stream.flush()
            self.last_part = part
