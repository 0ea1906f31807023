"""The training progress bar: tqdm's live bar on a terminal, plain meter lines otherwise."""
import io
import re

from tinyalex.train.progress import PLAIN_LINES_PER_EPOCH, Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_epoch(stream, batches=50):
    progress = Progress(1, 3, batches, stream)
    for batch in range(1, batches + 1):
        progress.update(batch, 2.3, 0.25, 120.0)
    return stream.getvalue()


def test_a_log_file_gets_a_few_plain_lines_with_rate_and_eta():
    lines = run_epoch(io.StringIO()).splitlines()
    assert "\r" not in "".join(lines)
    assert len(lines) <= PLAIN_LINES_PER_EPOCH + 1
    for line in lines:
        assert re.fullmatch(r"epoch 2/3: +\d+% \d+/50 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+batch/s,"
                            r" loss 2\.3000 acc 0\.2500 120 img/s\]", line), line
    assert lines[-1].startswith("epoch 2/3: 100% 50/50")


def test_a_terminal_gets_a_live_bar_that_ends_the_epoch_on_its_own_line():
    text = run_epoch(Terminal())
    assert text.startswith("\repoch 2/3:") and text.endswith("\n")
    assert "50/50" in text and "img/s" in text
