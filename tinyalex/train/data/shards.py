"""Prepared shards: an ImageFolder decoded once into fixed-size uint8 arrays on disk, read
back with memory mapping (``tinyalex prepare``, then ``--dataset shards:PATH``).

Decoding a JPEG and scaling it to 256 px costs most of the input pipeline's time, and it
gives the same pixels every epoch; cuda-convnet's "data batches" did it once, too. Here
each split becomes ``PATH/SPLIT/images-00000.npy, ...`` (uint8 (n, size, size, 3), at most
``shard_images`` images each), ``labels.npy`` (int64) and ``manifest.json`` (format,
classes, count, size, shard files), written last so that a half-written split is never
mistaken for a finished one. Training then maps the shards (``np.load(mmap_mode="r")``):
a batch reads only its images' pages, the OS page cache keeps hot shards in memory, and
worker processes share those pages instead of copying.
"""
import json
import os

import numpy as np

from tinyalex.train.data.image_folder import ImageFolder

FORMAT = 1
SPLITS = ("train", "val")


def _decode(args):
    """Worker: decode images `indices` of an ImageFolder (uint8 (n, size, size, 3))."""
    folder, indices = args
    return folder.get_batch(np.asarray(indices, dtype=np.int64))[0]


def prepare(source, out, size=256, shard_images=1024, workers=0, skip_bad=False, log=print):
    """Pack SOURCE/train and SOURCE/val (class folders of images) into shards under OUT.

    Every image is scaled so its shorter side is `size`, then center-cropped to a square,
    as ImageFolder does in training. workers > 0 decodes with that many processes.
    Undecodable images refuse the split (listed) unless skip_bad, which leaves them out.
    Returns {split: number of images}."""
    for name, value, minimum in (("size", size, 1), ("shard_images", shard_images, 1),
                                 ("workers", workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    counts = {}
    for split in SPLITS:
        folder = ImageFolder(os.path.join(source, split), resize=size)
        bad = folder.find_unreadable()
        if bad and not skip_bad:
            listed = ", ".join(path for path, _ in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise ValueError(f"{folder.root}: expected only decodable images, got {len(bad)} that "
                             f"are not: {listed}; remove them or pass --skip-bad-images")
        if bad:
            folder.remove(path for path, _ in bad)
            log(f"{folder.root}: left out {len(bad)} undecodable image{'s' if len(bad) > 1 else ''}")
        counts[split] = _write_split(folder, os.path.join(out, split), size, shard_images, workers, log)
    return counts


def _write_split(folder, directory, size, shard_images, workers, log):
    os.makedirs(directory, exist_ok=True)
    manifest_path = os.path.join(directory, "manifest.json")
    if os.path.exists(manifest_path):
        os.unlink(manifest_path)                        # the split is being rewritten
    n = len(folder)
    chunks = [list(range(start, min(start + 64, n))) for start in range(0, n, 64)]
    pool = None
    if workers:
        import multiprocessing as mp
        pool = mp.get_context("spawn").Pool(workers)
        decoded = pool.imap(_decode, [(folder, c) for c in chunks])
    else:
        decoded = (_decode((folder, c)) for c in chunks)
    files, shard, row = [], None, 0
    try:
        for chunk, images in zip(chunks, decoded):
            for index, image in zip(chunk, images):
                if shard is None or row == len(shard):
                    if shard is not None:
                        shard.flush()
                    count = min(shard_images, n - index)
                    name = f"images-{len(files):05d}.npy"
                    files.append(name)
                    shard = np.lib.format.open_memmap(os.path.join(directory, name), mode="w+",
                                                      dtype=np.uint8, shape=(count, size, size, 3))
                    row = 0
                shard[row] = image
                row += 1
        if shard is not None:
            shard.flush()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    np.save(os.path.join(directory, "labels.npy"), folder.targets)
    manifest = dict(format=FORMAT, classes=folder.classes, count=n, size=size,
                    shard_images=shard_images, files=files)
    tmp = manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f)
    os.replace(tmp, manifest_path)
    log(f"{directory}: {n} images of {size}x{size} in {len(files)} shard{'s' if len(files) != 1 else ''}")
    return n


class ShardDataset:
    """A split written by :func:`prepare`, memory-mapped: ``len()``, ``classes`` and
    ``get_batch(indices) -> (uint8 (B, size, size, 3), int64 (B,))`` like ImageFolder."""

    def __init__(self, directory):
        manifest_path = os.path.join(directory, "manifest.json")
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(f"{directory}: expected a split written by `tinyalex prepare` "
                                    f"(with manifest.json), got no {manifest_path}")
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path}: expected format {FORMAT}, got {manifest.get('format')}")
        self.directory, self.classes = directory, list(manifest["classes"])
        self.size, self.shard_images = manifest["size"], manifest["shard_images"]
        self.targets = np.load(os.path.join(directory, "labels.npy"))
        self.shards = [np.load(os.path.join(directory, name), mmap_mode="r") for name in manifest["files"]]
        if len(self.targets) != manifest["count"] or sum(len(s) for s in self.shards) != manifest["count"]:
            raise ValueError(f"{directory}: expected {manifest['count']} images and labels as "
                             f"manifest.json says, got {sum(len(s) for s in self.shards)} images and "
                             f"{len(self.targets)} labels")

    def __len__(self):
        return len(self.targets)

    def get_batch(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        images = np.empty((len(indices), self.size, self.size, 3), np.uint8)
        shard, row = np.divmod(indices, self.shard_images)
        for s in np.unique(shard):
            where = shard == s
            images[where] = self.shards[s][row[where]]   # reads only these images' pages
        return images, self.targets[indices]

    def __getstate__(self):                              # workers re-map instead of copying
        return {"directory": self.directory}

    def __setstate__(self, state):
        self.__init__(state["directory"])
