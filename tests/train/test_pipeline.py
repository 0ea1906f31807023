"""The input pipeline's determinism across data-parallel ranks and worker processes, and
the per-sample random draws (SampleRNG) that make it so."""
import numpy as np
import pytest

from tinyalex.train.data.dataset import ArrayDataset
from tinyalex.utils.data.loader import DataLoader
from tinyalex.train.data.transforms import Compose, Normalize, PCALighting, RandomCrop, RandomHorizontalFlip
from tinyalex.random import SampleRNG
from tinyalex.train.data.transforms import ToFloat


def rgb_dataset(n=19, side=12, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    return ArrayDataset(images, np.arange(n) % 4, classes=list("abcd"))


def paper_augmentation(size=8):
    return Compose([RandomCrop(size), RandomHorizontalFlip(), ToFloat(), PCALighting(),
                    Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])


def collect(loader):
    return [(images.copy(), labels.copy()) for images, labels in loader]


def test_sample_rng_draws_depend_on_the_position_only():
    positions = np.array([5, 0, 17, 3])
    whole = SampleRNG(7, 2, positions)
    crops, flips, light = whole.integers(0, 33, 4), whole.random(4), whole.normal(0, 0.1, (4, 3))
    for subset in ([2], [1, 3], [3, 0]):     # any subset, in any order, as another rank sees it
        part = SampleRNG(7, 2, positions[subset])
        np.testing.assert_array_equal(part.integers(0, 33, len(subset)), crops[subset])
        np.testing.assert_array_equal(part.random(len(subset)), flips[subset])
        np.testing.assert_array_equal(part.normal(0, 0.1, (len(subset), 3)), light[subset])
    other_epoch = SampleRNG(7, 3, positions)
    assert not np.array_equal(other_epoch.integers(0, 33, 4), crops)
    with pytest.raises(ValueError, match=r"expected the number of samples \(4\) first, got 3"):
        whole.random(3)


def test_sample_rng_distributions():
    rng = SampleRNG(1, 0, np.arange(20000))
    ints = rng.integers(3, 10, 20000)
    assert ints.min() == 3 and ints.max() == 9
    assert abs(np.bincount(ints - 3).std() / 20000 * 7) < 0.05
    u = rng.random(20000)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    z = rng.normal(1.0, 2.0, (20000, 2))
    assert np.isfinite(z).all() and abs(z.mean() - 1.0) < 0.05 and abs(z.std() - 2.0) < 0.05


@pytest.mark.parametrize("batch_size,world_size,unit", [(6, 2, 1), (5, 2, 1), (4, 3, 1), (7, 4, 1),
                                                        (6, 2, 2), (7, 2, 3), (8, 3, 2)])
def test_rank_slices_concatenate_to_the_one_process_batches(batch_size, world_size, unit):
    """Every rank's part of every batch, rank by rank, is the one-process batch: the same
    samples with the same crops, flips and lighting (19 samples: a short last batch, and
    with 4 ranks a batch of 3 leaves one rank empty). With rank_unit, each part is whole
    micro-batches of `unit` rows (but the batch's last one)."""
    def loader(rank, size):
        data = DataLoader(rgb_dataset(), batch_size, shuffle=True, seed=4, transform=paper_augmentation(),
                          rank=rank, world_size=size, rank_unit=unit)
        data.set_epoch(1)
        return data
    whole = collect(loader(0, 1))
    parts = [collect(loader(r, world_size)) for r in range(world_size)]
    for b, (images, labels) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[b][1] for p in parts]), labels)
        np.testing.assert_allclose(np.concatenate([p[b][0] for p in parts]), images, rtol=0, atol=0)
        for rank in range(world_size):
            first, stop, n = loader(rank, world_size).rows(b)
            assert n == len(labels) and len(parts[rank][b][1]) == stop - first
            assert (first % unit == 0 or first == n) and (stop % unit == 0 or stop == n)


def test_worker_processes_give_the_in_process_batches_for_any_count():
    """workers=1 and workers=2 yield exactly the batches of the in-process loader, also
    for a rank's slice and when resuming mid-epoch; a second epoch reuses the pool."""
    def run(workers, epoch, start=0, rank=0, size=1, unit=1):
        data = DataLoader(rgb_dataset(), 4, shuffle=True, seed=2, transform=paper_augmentation(),
                          workers=workers, rank=rank, world_size=size, rank_unit=unit)
        try:
            data.set_epoch(epoch, start)
            first = collect(data)
            data.set_epoch(epoch + 1)
            return first, collect(data)
        finally:
            data.close()

    def same(a, b):
        return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
                                        for x, y in zip(a, b))
    reference = run(0, 3)
    for workers in (1, 2):
        got = run(workers, 3)
        assert same(got[0], reference[0]) and same(got[1], reference[1])
    assert same(run(2, 3, start=2)[0], run(0, 3, start=2)[0])
    assert same(run(2, 3, rank=1, size=2)[0], run(0, 3, rank=1, size=2)[0])
    assert same(run(2, 3, rank=1, size=2, unit=3)[0], run(0, 3, rank=1, size=2, unit=3)[0])


class BrokenDataset:
    classes = ["a"]

    def __len__(self):
        return 8

    def get_batch(self, indices):
        if 5 in list(indices):
            raise KeyError("sample 5 is unreadable")
        return np.zeros((len(indices), 2, 2), np.uint8), np.zeros(len(indices), np.int64)


def test_a_worker_error_reaches_the_consumer():
    data = DataLoader(BrokenDataset(), 2, workers=2)
    try:
        with pytest.raises(KeyError, match="sample 5 is unreadable"):
            collect(data)
        data.set_epoch(0, start_batch=3)          # batches after the bad one: the pool still serves
        assert [len(labels) for _, labels in collect(data)] == [2]
    finally:
        data.close()


def write_image_folder(root, per_class=(5, 3), side=(40, 30)):
    from PIL import Image
    rng = np.random.default_rng(1)
    for split, n in zip(("train", "val"), per_class):
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (side[0] + i, side[1], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


@pytest.mark.parametrize("workers", [0, 2])
def test_prepared_shards_hold_the_image_folder_pixels(tmp_path, workers):
    from tinyalex.train.data.image_folder import ImageFolder
    from tinyalex.train.data.shards import ShardDataset, prepare
    write_image_folder(tmp_path / "images")
    counts = prepare(str(tmp_path / "images"), str(tmp_path / "shards"), size=24, shard_images=4,
                     workers=workers, log=lambda line: None)
    assert counts == {"train": 10, "val": 6}
    for split in ("train", "val"):
        folder = ImageFolder(str(tmp_path / "images" / split), resize=24)
        shards = ShardDataset(str(tmp_path / "shards" / split))
        assert len(shards) == len(folder) and shards.classes == folder.classes
        indices = np.random.default_rng(0).permutation(len(folder))   # across shard boundaries
        for got, want in zip(shards.get_batch(indices), folder.get_batch(indices)):
            np.testing.assert_array_equal(got, want)
    assert len(ShardDataset(str(tmp_path / "shards" / "train")).shards) == 3   # 4 + 4 + 2


def test_a_split_without_its_manifest_is_refused(tmp_path):
    from tinyalex.train.data.shards import ShardDataset, prepare
    write_image_folder(tmp_path / "images")
    prepare(str(tmp_path / "images"), str(tmp_path / "shards"), size=16, log=lambda line: None)
    (tmp_path / "shards" / "val" / "manifest.json").unlink()    # as a killed prepare leaves it
    with pytest.raises(FileNotFoundError, match="expected a split written by `tinyalex prepare`"):
        ShardDataset(str(tmp_path / "shards" / "val"))


def test_train_reads_prepared_shards_through_workers(tmp_path):
    """A loader over the shards with 2 workers gives the ImageFolder loader's batches."""
    from tinyalex.train.data.image_folder import ImageFolder
    from tinyalex.train.data.shards import ShardDataset, prepare
    write_image_folder(tmp_path / "images", per_class=(6, 2))
    prepare(str(tmp_path / "images"), str(tmp_path / "shards"), size=20, shard_images=5,
            log=lambda line: None)
    def batches(dataset, workers):
        data = DataLoader(dataset, 5, shuffle=True, seed=1, transform=paper_augmentation(16),
                          workers=workers)
        try:
            return collect(data)
        finally:
            data.close()
    want = batches(ImageFolder(str(tmp_path / "images" / "train"), resize=20), 0)
    got = batches(ShardDataset(str(tmp_path / "shards" / "train")), 2)
    assert len(got) == len(want) == 3
    for (a, la), (b, lb) in zip(got, want):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
