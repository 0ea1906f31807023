"""tinyalex.train.data: IDX files, Fashion-MNIST, ImageFolder, the batch transforms and the loader."""
import gzip
import os
import struct
import threading

import numpy as np
import pytest
from PIL import Image

from tinyalex.train.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_fashion_mnist
from tinyalex.train.data.transforms import IMAGENET_EIGVAL, IMAGENET_EIGVEC, CenterCrop, Compose, Normalize, PCALighting, RandomCrop, RandomHorizontalFlip, Resize, TenCrop, average_ten_crops, pca_from_images
from tinyalex.train.data.dataset import ArrayDataset
from tinyalex.train.data.transforms import ToFloat
from tinyalex.utils.data.loader import DataLoader
from tinyalex.train.data.image_folder import ImageFolder
from tinyalex.train.data.idx import read_idx, write_idx
from tinyalex.random import SampleRNG
from tinyalex.train.data.transforms import resize_matrix


# ---------------------------------------------------------------------------- IDX files

def idx_bytes(array, code):
    """An IDX file built by hand from the format's definition (independent of write_idx)."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype, code", [("u1", 0x08), ("i1", 0x09), ("i2", 0x0B),
                                         ("i4", 0x0C), ("f4", 0x0D), ("f8", 0x0E)])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, dtype, code, compress):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    raw = idx_bytes(array, code)
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, array)


def test_write_idx_round_trips_and_rejects_bool(tmp_path):
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / "l", labels)
    assert (tmp_path / "l").read_bytes()[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 7])
    np.testing.assert_array_equal(read_idx(tmp_path / "l", ndim=1), labels)
    with pytest.raises(TypeError, match="array"):
        write_idx(tmp_path / "b", np.zeros(3, bool))


def test_truncated_gzip_names_the_file(tmp_path):
    raw = gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8), 0x08))
    path = tmp_path / "cut.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.gz.*gzip"):
        read_idx(path)


def test_truncated_payload_says_expected_and_found(tmp_path):
    raw = idx_bytes(np.zeros((10, 28, 28), np.uint8), 0x08)
    path = tmp_path / "short.idx"
    path.write_bytes(raw[:-5])
    with pytest.raises(ValueError, match=r"short.idx.*\(10, 28, 28\).*7840.*found 7835"):
        read_idx(path)
    path.write_bytes(raw + b"\0")  # trailing bytes are corruption too
    with pytest.raises(ValueError, match="found 7841"):
        read_idx(path)


@pytest.mark.parametrize("header, message", [
    (bytes([1, 0, 8, 1]), "magic number 0x01000801"),
    (bytes([0, 0, 0x0A, 1]), "magic number 0x00000A01"),
    (bytes([0, 0, 8, 0]), "at least 1 dimension"),
    (bytes([0, 0, 8, 3, 0, 0]), "truncated IDX header"),
    (b"\0\0", "4-byte magic"),
])
def test_bad_headers_name_the_file(tmp_path, header, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(header)
    with pytest.raises(ValueError, match=f"bad.idx.*{message}"):
        read_idx(path)


def test_read_idx_checks_the_dimension_count(tmp_path):
    write_idx(tmp_path / "x", np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="expected an IDX file with 3 dimension.*found 2"):
        read_idx(tmp_path / "x", ndim=3)


# ---------------------------------------------------------------------------- Fashion-MNIST

def write_fashion_files(directory, n_images, n_labels, prefix="train", compress=True):
    rng = np.random.default_rng(1)
    prefix = "train" if prefix == "train" else "t10k"
    files = {f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, (n_images, 28, 28), np.uint8),
             f"{prefix}-labels-idx1-ubyte": rng.integers(0, 10, n_labels).astype(np.uint8)}
    for name, array in files.items():
        write_idx(directory / name, array)
        if compress:
            (directory / (name + ".gz")).write_bytes(gzip.compress((directory / name).read_bytes()))
            os.remove(directory / name)
    return files


@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_mnist_from_a_directory(tmp_path, compress):
    files = write_fashion_files(tmp_path, 6, 6, prefix="test", compress=compress)
    dataset = load_fashion_mnist("test", data_dir=tmp_path)
    images, labels = dataset.get_batch(np.arange(6))
    assert images.dtype == np.uint8 and images.shape == (6, 28, 28)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, files["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(labels, files["t10k-labels-idx1-ubyte"])
    assert dataset.classes == list(FASHION_MNIST_CLASSES)


def test_fashion_mnist_count_mismatch_names_both_files(tmp_path):
    write_fashion_files(tmp_path, 5, 4)
    with pytest.raises(ValueError, match="train-images.*5 images.*train-labels.*4 labels"):
        load_fashion_mnist("train", data_dir=tmp_path)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist("train", data_dir=tmp_path / "nowhere")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "apt-get update" in message
    assert "--data-dir" in message and "train-images-idx3-ubyte.gz" in message
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", data_dir=tmp_path)


def test_real_fashion_mnist():
    if not os.path.isdir(DEFAULT_FASHION_MNIST_DIR):
        pytest.skip(f"{DEFAULT_FASHION_MNIST_DIR} is absent"
                    " (apt-get install dataset-fashion-mnist)")
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert len(train) == 60000 and len(test) == 10000
    for dataset in (train, test):
        assert dataset.images.shape[1:] == (28, 28) and dataset.images.dtype == np.uint8
        assert dataset.labels.dtype == np.int64
        assert dataset.labels.min() == 0 and dataset.labels.max() == 9
    # balanced classes, and the published normalisation constants describe this data
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 6000))
    counts = np.bincount(train.images.ravel(), minlength=256)  # a histogram: exact, cheap
    values = np.arange(256) / 255
    mean = counts @ values / counts.sum()
    std = np.sqrt(counts @ (values - mean) ** 2 / counts.sum())
    assert abs(mean - FASHION_MNIST_MEAN) < 1e-4 and abs(std - FASHION_MNIST_STD) < 1e-4


# ---------------------------------------------------------------------------- ImageFolder

@pytest.fixture
def image_root(tmp_path):
    """root/{cat,dog}/ with solid-colour PNG and JPEG images of different sizes."""
    colours = {"dog": (200, 30, 30), "cat": (20, 40, 220)}
    for name, colour in colours.items():
        (tmp_path / name / "nested").mkdir(parents=True)
        Image.new("RGB", (40, 30), colour).save(tmp_path / name / "b.png")
        Image.new("RGB", (20, 50), colour).save(tmp_path / name / "a.jpg", quality=95)
        Image.new("L", (16, 16), 128).save(tmp_path / name / "nested" / "c.PNG")
        (tmp_path / name / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_lists_like_torchvision(image_root):
    folder = ImageFolder(image_root, resize=8)
    assert folder.classes == ["cat", "dog"]
    assert folder.class_to_idx == {"cat": 0, "dog": 1}
    relative = [(os.path.relpath(path, image_root), label) for path, label in folder.samples]
    assert relative == [("cat/a.jpg", 0), ("cat/b.png", 0), ("cat/nested/c.PNG", 0),
                        ("dog/a.jpg", 1), ("dog/b.png", 1), ("dog/nested/c.PNG", 1)]


def test_image_folder_decodes_to_square_rgb(image_root):
    folder = ImageFolder(image_root, resize=8)
    images, labels = folder.get_batch(np.array([4, 0, 2]))
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [1, 0, 0])
    np.testing.assert_array_equal(images[0], np.broadcast_to((200, 30, 30), (8, 8, 3)))
    assert np.abs(images[1].astype(int) - (20, 40, 220)).max() <= 3  # JPEG is lossy
    np.testing.assert_array_equal(images[2], 128)  # grayscale becomes RGB


def test_image_folder_resizes_shorter_side_then_crops_centre(tmp_path):
    (tmp_path / "c").mkdir()
    stripes = np.zeros((20, 60), np.uint8)  # white | grey | black, 20 columns each
    stripes[:, :20], stripes[:, 20:40] = 255, 100
    Image.fromarray(stripes).save(tmp_path / "c" / "wide.png")
    image = ImageFolder(tmp_path, resize=10).load_image(0)  # 20x60 -> 10x30 -> middle 10x10
    assert image.shape == (10, 10, 3)
    assert (image[:, 1:-1] == 100).all()  # the grey stripe; the edge columns blend in


def test_image_folder_corrupt_image_names_the_file(image_root):
    (image_root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    folder = ImageFolder(image_root, resize=8)
    index = [path for path, _ in folder.samples].index(str(image_root / "dog" / "broken.png"))
    with pytest.raises(ValueError, match="broken.png.*cannot decode"):
        folder.get_batch([index])


def test_image_folder_rejects_empty_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-directories"):
        ImageFolder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "readme.txt").write_text("")
    with pytest.raises(ValueError, match="no images in class directory empty_class"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="resize"):
        ImageFolder(tmp_path, resize=0)


# ---------------------------------------------------------------------------- transforms

def numbered(shape):
    """uint8 images whose pixel values reveal where they came from (kept < 256)."""
    return (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)


def test_resize_matrix_is_bilinear_with_half_pixel_centres():
    # 2 -> 4: outputs at input coordinates 0.25, 0.75, 1.25, 1.75 (pixel centres 0.5, 1.5)
    np.testing.assert_allclose(resize_matrix(2, 4), [[1, 0], [0.75, 0.25],
                                                     [0.25, 0.75], [0, 1]])
    # 4 -> 2: output 0 sits at 1.0; the triangle, twice as wide, weighs input centres
    # 0.5, 1.5, 2.5 by 0.75, 0.75, 0.25 (antialiasing), then the row is normalised
    np.testing.assert_allclose(resize_matrix(4, 2), [[3 / 7, 3 / 7, 1 / 7, 0],
                                                     [0, 1 / 7, 3 / 7, 3 / 7]])
    np.testing.assert_allclose(resize_matrix(5, 5), np.eye(5))


@pytest.mark.parametrize("size", [(56, 56), (14, 14), (9, 17)])
def test_resize_matches_pillow_on_every_layout(size):
    images = np.random.default_rng(2).integers(0, 256, (3, 28, 28, 3), np.uint8)
    expected = np.stack([np.asarray(Image.fromarray(image).resize(size[::-1],
                                                                  Image.BILINEAR))
                         for image in images])
    got = Resize(size)(images)
    assert got.dtype == np.uint8 and got.shape == (3, *size, 3)
    assert np.abs(got.astype(int) - expected).max() <= 1  # Pillow rounds in fixed point
    # float NCHW gives the same numbers before rounding, and uint8 NHW the same after
    as_float = Resize(size)(images.transpose(0, 3, 1, 2).astype(np.float64))
    assert as_float.dtype == np.float64 and as_float.shape == (3, 3, *size)
    np.testing.assert_allclose(as_float, got.transpose(0, 3, 1, 2), atol=0.5 + 1e-4)
    np.testing.assert_array_equal(Resize(size)(images[..., 0]), got[..., 0])


def test_random_crop_takes_a_window_of_the_padded_image():
    images = numbered((6, 8, 10))
    crops = RandomCrop((5, 4), padding=2)(images, np.random.default_rng(0))
    assert crops.shape == (6, 5, 4)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    for image, crop in zip(padded, crops):
        windows = np.lib.stride_tricks.sliding_window_view(image, (5, 4))
        assert (windows == crop).all(axis=(2, 3)).any()
    # the same offsets on every layout: uint8 NHWC and float NCHW
    colour = np.stack([images, images // 2, images // 3], axis=-1)
    crops_nhwc = RandomCrop((5, 4), padding=2)(colour, np.random.default_rng(0))
    crops_nchw = RandomCrop((5, 4), padding=2)(colour.transpose(0, 3, 1, 2).astype(np.float32),
                                               np.random.default_rng(0))
    np.testing.assert_array_equal(crops_nhwc[..., 0], crops)
    np.testing.assert_array_equal(crops_nchw, crops_nhwc.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="does not fit"):
        RandomCrop(13)(images, np.random.default_rng(0))


def test_random_crop_reaches_every_offset():
    position = np.arange(4)[:, None] * 16 + np.arange(5)  # pixel value = 16 * row + column
    images = np.broadcast_to(position.astype(np.uint8), (300, 4, 5))
    corners = RandomCrop((2, 3))(images, np.random.default_rng(0))[:, 0, 0]
    assert set(corners // 16) == {0, 1, 2} and set(corners % 16) == {0, 1, 2}


def test_horizontal_flip():
    images = numbered((16, 3, 5, 2)).astype(np.float32)  # float NCHW: width is axis 3
    rng = np.random.default_rng(0)
    flipped = RandomHorizontalFlip(p=1.0)(images, rng)
    np.testing.assert_array_equal(flipped, images[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(flipped, rng), images)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(images, rng), images)
    some = RandomHorizontalFlip()(images, np.random.default_rng(3))
    was_flipped = (some != images).any(axis=(1, 2, 3))
    assert 0 < was_flipped.sum() < 16
    np.testing.assert_array_equal(some[was_flipped], images[was_flipped][..., ::-1])
    nhwc = numbered((4, 3, 5, 2))  # uint8 NHWC: width is axis 2
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(nhwc, rng), nhwc[:, :, ::-1])


def test_center_crop_location():
    images = numbered((2, 8, 9, 3))
    crops = CenterCrop((3, 4))(images)  # odd margins 5 and 5: the extra pixel goes last
    np.testing.assert_array_equal(crops, images[:, 2:5, 2:6])
    as_nchw = CenterCrop((3, 4))(images.transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(as_nchw, crops.transpose(0, 3, 1, 2))


def test_ten_crop_layout_and_averaging():
    images = numbered((2, 3, 6, 7)).astype(np.float32)  # NCHW
    crops = TenCrop((4, 5))(images)
    assert crops.shape == (20, 3, 4, 5)
    for n in range(2):
        windows = [images[n, :, :4, :5], images[n, :, :4, 2:], images[n, :, 2:, :5],
                   images[n, :, 2:, 2:], images[n, :, 1:5, 1:6]]
        for k, window in enumerate(windows):
            np.testing.assert_array_equal(crops[10 * n + k], window)
            np.testing.assert_array_equal(crops[10 * n + k + 5], window[..., ::-1])
    predictions = np.repeat(np.array([[1.0, 0.0], [0.0, 1.0]]), 10, axis=0)
    predictions[:10, 1] += np.linspace(-1, 1, 10)  # zero-mean noise on image 0's crops
    np.testing.assert_allclose(average_ten_crops(predictions), [[1, 0], [0, 1]], atol=1e-12)
    with pytest.raises(ValueError, match="10 \\* N"):
        average_ten_crops(np.zeros((15, 2)))


def test_to_float_and_normalize():
    images = numbered((2, 3, 4, 3))  # NHWC
    y = ToFloat(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))(images)
    assert y.dtype == np.float32 and y.shape == (2, 3, 3, 4) and y.flags.c_contiguous
    expected = (images.transpose(0, 3, 1, 2) / 255 - np.array([0.1, 0.2, 0.3])[:, None, None]) \
        / np.array([0.5, 0.25, 2.0])[:, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    gray = ToFloat()(images[..., 0])
    assert gray.shape == (2, 1, 3, 4) and 0 <= gray.min() and gray.max() <= 1
    normalized = Normalize((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))(ToFloat()(images))
    np.testing.assert_allclose(normalized, y, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        ToFloat()(y)
    with pytest.raises(ValueError, match="mean: expected 1 or 3"):
        ToFloat(mean=(0.1, 0.2))(images)
    with pytest.raises(ValueError, match="std"):
        ToFloat(std=0.0)


def test_pca_lighting_shifts_the_mean_colour_by_the_expected_amount():
    images = np.random.default_rng(0).random((4, 3, 5, 6)).astype(np.float32)
    shifted = PCALighting(alphastd=0.1)(images, np.random.default_rng(7))
    alpha = np.random.default_rng(7).normal(0, 0.1, (4, 3))
    eigval, eigvec = np.array(IMAGENET_EIGVAL), np.array(IMAGENET_EIGVEC)
    expected = np.stack([sum(a[i] * eigval[i] * eigvec[:, i] for i in range(3)) for a in alpha])
    assert shifted.dtype == np.float32
    np.testing.assert_allclose((shifted - images).mean(axis=(2, 3)), expected, atol=1e-6)
    np.testing.assert_allclose((shifted - images).std(axis=(2, 3)), 0, atol=1e-6)  # uniform
    np.testing.assert_array_equal(PCALighting(0.0)(images, np.random.default_rng(7)), images)
    with pytest.raises(TypeError, match="ToFloat"):
        PCALighting()(numbered((1, 2, 2, 3)), np.random.default_rng(0))


def test_pca_from_images_recovers_a_known_covariance():
    rng = np.random.default_rng(0)
    eigvec = np.array(IMAGENET_EIGVEC)
    eigvec /= np.linalg.norm(eigvec, axis=0)  # the published values are rounded
    eigval = np.array([0.02, 0.005, 0.001])
    colours = 0.5 + (rng.standard_normal((200000, 3)) * np.sqrt(eigval)) @ eigvec.T
    images = colours.reshape(50, 40, 100, 3).transpose(0, 3, 1, 2)  # float NCHW
    got_val, got_vec = pca_from_images(images, chunk_pixels=30000)
    np.testing.assert_allclose(got_val, eigval, rtol=0.02)
    np.testing.assert_allclose(np.abs(got_vec.T @ eigvec), np.eye(3), atol=0.02)
    as_uint8 = np.clip(np.rint(colours * 255), 0, 255).astype(np.uint8).reshape(50, 40, 100, 3)
    np.testing.assert_allclose(pca_from_images(as_uint8)[0], eigval, rtol=0.03)
    gray_val, gray_vec = pca_from_images(as_uint8[..., 0])
    assert gray_val.shape == (1,) and abs(gray_vec[0, 0]) == 1


def test_compose_applies_in_order():
    images = numbered((2, 8, 8))
    pipeline = Compose([CenterCrop(4), ToFloat(), Resize(2)])
    y = pipeline(images, np.random.default_rng(0))
    np.testing.assert_allclose(y, Resize(2)(ToFloat()(images[:, 2:6, 2:6])))
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        Compose([ToFloat(), "flip"])


def test_transforms_reject_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        Resize((3, 0))
    with pytest.raises(ValueError, match="padding"):
        RandomCrop(3, padding=-1)
    with pytest.raises(ValueError, match="p: expected"):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match="images: expected"):
        CenterCrop(2)(np.zeros((2, 4, 4), np.float32))  # float must be NCHW
    with pytest.raises(TypeError, match="rng"):
        RandomHorizontalFlip()(numbered((1, 2, 2)), None)


# ---------------------------------------------------------------------------- loader

def id_dataset(n=23):
    """Images (n, 2, 3) whose pixels and label all equal the sample index (mod 256)."""
    ids = np.arange(n)
    return ArrayDataset(np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None], (n, 2, 3)),
                        ids)


def flip_and_crop():
    return Compose([RandomCrop(2, padding=1), RandomHorizontalFlip()])


def collect(loader):
    return [(images.copy(), labels.copy()) for images, labels in loader]


def test_loader_yields_float_nchw_and_every_sample_once():
    loader = DataLoader(id_dataset(), batch_size=5, shuffle=True, seed=3)
    batches = collect(loader)
    assert len(loader) == len(batches) == 5
    assert [len(labels) for _, labels in batches] == [5, 5, 5, 5, 3]
    images, labels = batches[0]
    assert images.dtype == np.float32 and images.shape == (5, 1, 2, 3)
    assert labels.dtype == np.int64
    np.testing.assert_allclose(images[:, 0, 0, 0], labels / 255)  # the pairs stay together
    seen = np.concatenate([labels for _, labels in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(23))
    assert not np.array_equal(seen, np.arange(23))  # shuffled


def test_loader_drop_last_and_unshuffled_order():
    loader = DataLoader(id_dataset(), batch_size=5, drop_last=True)
    batches = collect(loader)
    assert len(loader) == len(batches) == 4
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.arange(20))


def test_loader_epochs_are_reproducible_on_their_own():
    def run(epoch, prefetch, seed=0):
        loader = DataLoader(id_dataset(), 4, shuffle=True, seed=seed, transform=flip_and_crop(),
                            prefetch=prefetch)
        loader.set_epoch(epoch)
        return collect(loader)

    def same(a, b):
        return all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
                   for x, y in zip(a, b, strict=True))

    epoch2 = run(2, prefetch=2)
    assert same(epoch2, run(2, prefetch=0))  # no dependence on threads or history
    assert same(epoch2, run(2, prefetch=1))
    assert not same(epoch2, run(3, prefetch=2))
    assert not same(epoch2, run(2, prefetch=2, seed=1))
    # the augmentation of the sample at position g of the epoch comes from SampleRNG(seed, epoch, [g])
    order = np.random.default_rng([0, 2]).permutation(23)
    images, _ = id_dataset().get_batch(order[4:8])
    expected = ToFloat()(flip_and_crop()(images, SampleRNG(0, 2, np.arange(4, 8))))
    np.testing.assert_array_equal(epoch2[1][0], expected)
    np.testing.assert_array_equal(epoch2[1][1], order[4:8])


class FailingDataset:
    def __len__(self):
        return 10

    def get_batch(self, indices):
        if 6 in indices:
            raise KeyError("sample 6 is unreadable")
        return np.zeros((len(indices), 2, 2), np.uint8), np.asarray(indices)


def loader_threads():
    return [t for t in threading.enumerate() if t.name == "tinyalex-data-loader"]


def test_loader_reraises_worker_exceptions():
    received = []
    with pytest.raises(KeyError, match="sample 6"):
        for _, labels in DataLoader(FailingDataset(), batch_size=3):
            received.append(labels)
    assert len(received) == 2  # the batches before the failure still arrived
    assert not loader_threads()


def test_breaking_out_early_stops_the_worker():
    loader = DataLoader(id_dataset(200), batch_size=2, prefetch=2)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert not loader_threads()
    iterator = iter(loader)
    next(iterator)
    assert len(loader_threads()) == 1
    iterator.close()
    assert not loader_threads()


def test_loader_checks_transform_output_and_arguments():
    with pytest.raises(ValueError, match="TenCrop"):
        next(iter(DataLoader(id_dataset(), 4, transform=TenCrop(2), prefetch=0)))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(id_dataset(), 0)
    with pytest.raises(ValueError, match="prefetch"):
        DataLoader(id_dataset(), 2, prefetch=-1)
    with pytest.raises(ValueError, match="seed"):
        DataLoader(id_dataset(), 2, seed=-1)
    with pytest.raises(TypeError, match="shuffle"):
        DataLoader(id_dataset(), 2, shuffle=1)
    with pytest.raises(TypeError, match="transform"):
        DataLoader(id_dataset(), 2, transform="flip")
    with pytest.raises(TypeError, match="dataset"):
        DataLoader([1, 2, 3], 2)
    with pytest.raises(ValueError, match="epoch"):
        DataLoader(id_dataset(), 2).set_epoch(-1)


def test_array_dataset_validates():
    with pytest.raises(ValueError, match="images"):
        ArrayDataset(np.zeros((2, 3, 3), np.float32), [0, 1])
    with pytest.raises(ValueError, match="expected 2 labels"):
        ArrayDataset(np.zeros((2, 3, 3), np.uint8), [0, 1, 2])
    with pytest.raises(ValueError, match="classes"):
        ArrayDataset(np.zeros((2, 3, 3), np.uint8), [0, 5], classes=["a", "b"])
