"""The run directory's rules, in process on a tiny data set with the numpy kernels (no JIT):
settings on --resume (inherited, applied and logged, or refused), --overwrite, a failing
evaluation that costs no training, a data error mid-epoch that loses nothing, and
--skip-bad-images. (SIGKILL at every point: test_faults.py; one-line errors:
test_cli_errors.py.)"""
import os

import numpy as np
import pytest
from PIL import Image

from test_train import assert_same_checkpoint_state, read_jsonl, without_timing, write_split
from tinyalex import use_kernels
from tinyalex.train.cli import main
from tinyalex.train.data.dataset import ArrayDataset
from tinyalex.train.data.image_folder import ImageFolder, UnreadableImageError
from tinyalex.errors import TrainingError
from tinyalex.train.checkpoint import load_checkpoint
from tinyalex.train.config import TrainConfig
from tinyalex.train.evaluation import evaluate
from tinyalex.train.loop import Parts
from tinyalex.train.data.run_data import load_datasets


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-data")
    rng = np.random.default_rng(0)
    write_split(directory, "train", 32, rng)
    write_split(directory, "t10k", 16, rng)
    return directory


@pytest.fixture(autouse=True)
def numpy_kernels():
    with use_kernels("numpy"):
        yield


def argv(data, out, *extra, epochs=2):
    """cpu-alexnet's preset schedule (step, every 2 epochs), 2 batches of 8 per epoch."""
    return ["train", "--model", "cpu-alexnet", "--data-dir", str(data), "--batch-size", "8",
            "--epochs", str(epochs), "--limit-train", "16", "--limit-test", "16", "--device", "cpu",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    """2 epochs, and the same run trained to 3 epochs uninterrupted (the reference)."""
    out, three = tmp_path_factory.mktemp("two-epochs"), tmp_path_factory.mktemp("three-epochs")
    with use_kernels("numpy"):
        assert main(argv(tiny_data, out)) == 0
        assert main(argv(tiny_data, three, epochs=3)) == 0
    return out, three


def copy(out, tmp_path):
    import shutil
    return shutil.copytree(out, tmp_path / "run")


def test_resume_takes_every_setting_not_given_from_the_checkpoint(finished, tmp_path, capsys):
    run = copy(finished[0], tmp_path)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "resume: --epochs 3 (the checkpoint had 2)" in out and "chose" not in out
    assert without_timing(read_jsonl(run / "metrics.jsonl")) == without_timing(read_jsonl(finished[1] / "metrics.jsonl"))
    assert_same_checkpoint_state(run / "checkpoint.npz", finished[1] / "checkpoint.npz")


def test_resume_with_a_new_lr_applies_it_now_and_logs_it_once(finished, tiny_data, tmp_path, capsys):
    """Like editing param_group['lr'] in torch: epoch 3 trains at the new rate (the step
    schedule, which had divided 0.02 by 10 after epoch 2, divides from the new rate on)."""
    run = copy(finished[0], tmp_path)
    assert main(argv(tiny_data, run, "--resume", "--lr", "0.001", epochs=3)) == 0
    assert "resume: --lr 0.001 (the checkpoint had 0.002" in capsys.readouterr().out
    assert read_jsonl(run / "metrics.jsonl")[2]["lr"] == 0.001
    assert load_checkpoint(run / "checkpoint.npz")[2]["config"]["lr"] == 0.001
    assert main(argv(tiny_data, run, "--resume", "--lr", "0.001", epochs=4)) == 0  # the same lr again
    assert "resume: --lr" not in capsys.readouterr().out
    assert read_jsonl(run / "metrics.jsonl")[3]["lr"] == 0.001
    groups = load_checkpoint(run / "checkpoint.npz")[1]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(0.0001)  # divided after epoch 4, as every 2 epochs


def test_momentum_and_weight_decay_on_resume_go_into_the_parameter_groups(finished, tiny_data, tmp_path, capsys):
    run = copy(finished[0], tmp_path)
    assert main(argv(tiny_data, run, "--resume", "--momentum", "0.5", "--weight-decay", "0.001", epochs=3)) == 0
    groups = load_checkpoint(run / "checkpoint.npz")[1]["param_groups"]
    assert {(g["momentum"], g["weight_decay"]) for g in groups} == {(0.5, 0.001)}
    out = capsys.readouterr().out
    assert "resume: --momentum 0.5 (the checkpoint had 0.9)" in out and "resume: --weight-decay 0.001" in out


def test_a_finished_run_resumed_with_its_epochs_has_nothing_to_do(finished, tiny_data, tmp_path, capsys):
    run = copy(finished[0], tmp_path)
    before = (run / "checkpoint.npz").read_bytes()
    assert main(argv(tiny_data, run, "--resume")) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (run / "checkpoint.npz").read_bytes() == before


def test_overwrite_deletes_the_old_run_only_once_the_new_one_can_start(finished, tiny_data, tmp_path, capsys):
    run = copy(finished[0], tmp_path)
    (tmp_path / "empty").mkdir()
    before = {name: (run / name).read_bytes() for name in os.listdir(run)}
    assert main(argv(tmp_path / "empty", run, "--overwrite")) == 2  # no data there: nothing deleted
    assert "Fashion-MNIST not found" in capsys.readouterr().err
    assert {name: (run / name).read_bytes() for name in os.listdir(run)} == before
    assert main(argv(tiny_data, run, "--overwrite", epochs=1)) == 0
    assert [row["epoch"] for row in read_jsonl(run / "metrics.jsonl")] == [1]
    assert load_checkpoint(run / "best.npz")[2]["epoch"] == 1
    assert sorted(os.listdir(run)) == ["best.npz", "checkpoint.npz", "curves.png", "metrics.jsonl", "steps.jsonl"]


def test_a_failing_evaluation_costs_no_training(finished, tiny_data, tmp_path, monkeypatch, capsys):
    """The epoch's training is saved before the evaluation; --resume evaluates it."""
    run = tmp_path / "run"

    def evaluate_fails_in_epoch_2(model, loader, *args):
        if len(read_jsonl(run / "metrics.jsonl")) == 1:
            raise UnreadableImageError(f"{tmp_path / 'val' / 'x.jpg'}: cannot decode image: OSError: broken")
        return evaluate(model, loader, *args)

    assert main(argv(tiny_data, run), parts=Parts(evaluate=evaluate_fails_in_epoch_2)) == 2
    err = capsys.readouterr().err
    assert "x.jpg: cannot decode image" in err and "epoch 2's training is saved" in err
    meta = load_checkpoint(run / "checkpoint.npz")[2]
    assert (meta["epoch"], meta["batch"]) == (1, 2)  # epoch 2 trained, not yet evaluated
    assert main(argv(tiny_data, run, "--resume")) == 0
    ref = finished[0]
    assert without_timing(read_jsonl(run / "metrics.jsonl")) == without_timing(read_jsonl(ref / "metrics.jsonl"))
    assert_same_checkpoint_state(run / "checkpoint.npz", ref / "checkpoint.npz")


def test_an_image_that_fails_mid_epoch_stops_at_the_batch_before_with_it_saved(finished, tiny_data, tmp_path,
                                                                            monkeypatch, capsys):
    run = tmp_path / "run"
    real_get_batch, calls = ArrayDataset.get_batch, []

    def get_batch(self, indices):
        if len(self) == 32 and len(indices) == 8:  # a training batch (not the test set's)
            calls.append(1)
        if len(calls) == 3 and len(self) == 32 and len(indices) == 8:  # epoch 2's first batch
            raise UnreadableImageError("/data/train/cat/7.jpg: cannot decode image: OSError: broken data stream")
        return real_get_batch(self, indices)

    monkeypatch.setattr(ArrayDataset, "get_batch", get_batch)
    assert main(argv(tiny_data, run)) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "7.jpg: cannot decode image" in err and "epoch 2, batch 0" in err and "--skip-bad-images" in err
    monkeypatch.setattr(ArrayDataset, "get_batch", real_get_batch)
    assert main(argv(tiny_data, run, "--resume")) == 0
    assert_same_checkpoint_state(run / "checkpoint.npz", finished[0] / "checkpoint.npz")


def jpeg_bytes(rng):
    buffer = __import__("io").BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_image_folder_finds_undecodable_files_and_skips_them_when_asked(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(2):
            (tmp_path / name / f"{i}.jpg").write_bytes(jpeg_bytes(rng))
    whole = jpeg_bytes(rng)
    (tmp_path / "cat" / "cut.jpg").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "dog" / "text.jpg").write_text("not an image")
    (tmp_path / "dog" / "padded.jpg").write_bytes(whole + b"extra bytes some cameras append")
    folder = ImageFolder(tmp_path, resize=16)
    bad = dict(folder.find_unreadable())
    assert sorted(os.path.basename(p) for p in bad) == ["cut.jpg", "text.jpg"]  # padded.jpg decodes
    with pytest.raises(UnreadableImageError, match="cut.jpg"):
        folder.get_batch(np.arange(len(folder)))

    skipping = ImageFolder(tmp_path, resize=16, skip_bad=True)
    images, labels = skipping.get_batch(np.arange(len(skipping)))
    assert len(images) == len(labels) == len(skipping) - 2
    assert sorted(os.path.basename(p) for p in skipping.skipped) == ["cut.jpg", "text.jpg"]
    skipping.remove(bad)
    assert len(skipping) == 5 and skipping.targets.tolist() == [0, 0, 1, 1, 1]


def test_training_refuses_or_skips_bad_images_before_the_first_step(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / "images" / split / name).mkdir(parents=True)
            for i in range(2):
                (tmp_path / "images" / split / name / f"{i}.jpg").write_bytes(jpeg_bytes(rng))
    (tmp_path / "images" / "val" / "cat" / "bad.jpg").write_text("not an image")
    config = dict(dataset=f"imagefolder:{tmp_path / 'images'}", model="alexnet2012", device="cpu", epochs=1,
                  batch_size=4, out=str(tmp_path / "out"))
    with pytest.raises(TrainingError, match=r"1 that is not: .*bad\.jpg .*--skip-bad-images"):
        load_datasets(TrainConfig(**config))
    log = []
    train_set, test_set = load_datasets(TrainConfig(**config, skip_bad_images=True),
                                                     log.append)
    assert (len(train_set), len(test_set)) == (4, 4)
    assert log and log[0].startswith("warning: --skip-bad-images: left out 1 undecodable image") and "bad.jpg" in log[0]
