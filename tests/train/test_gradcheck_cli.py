"""``tinyalex gradcheck``: the table of every op's checks (tinyalex.train.opcheck)."""
import re

from tinyalex.train.cli import main

TABLE_COLUMNS = ["op", "check", "max abs err", "max rel err", "tolerance", "result"]


def table_rows(out):
    """The gradcheck table's header and rows, split into cells."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("op "))
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[start:]]
    return rows[0], [row for row in rows[2:] if len(row) == len(TABLE_COLUMNS)]


def test_gradcheck_one_op(capsys):
    assert main(["gradcheck", "--op", "relu", "--kernels", "numpy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tinyalex gradcheck: kernels numpy, float64")
    header, rows = table_rows(out)
    assert header == TABLE_COLUMNS
    assert rows and {row[0] for row in rows} == {"relu"} and {row[-1] for row in rows} == {"pass"}
    assert "finite differences" in {row[1] for row in rows}
    assert re.search(rf"^{len(rows)} passed, 0 failed$", out, re.M)


def test_gradcheck_every_op_in_float32(capsys):
    assert main(["gradcheck", "--all", "--dtype", "float32"]) == 0
    header, rows = table_rows(capsys.readouterr().out)
    assert header == TABLE_COLUMNS
    assert {row[0] for row in rows} == {"conv2d", "max_pool2d", "avg_pool2d", "local_response_norm",
                                        "relu", "dropout", "linear", "cross_entropy", "mse_loss"}
    assert {row[-1] for row in rows} == {"pass"}
