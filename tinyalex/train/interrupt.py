"""Ctrl-C during training: honoured between batches, never inside an SGD step."""
import signal
import threading


class DeferredInterrupt:
    """Turn Ctrl-C into a request honoured between batches, so a checkpoint never holds a
    half-applied SGD step; a second Ctrl-C interrupts at once. A process that ignores
    SIGINT (started with it ignored, as `nohup` and background jobs are) keeps ignoring it."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def raise_if_requested(self):
        if self.requested:
            raise KeyboardInterrupt
