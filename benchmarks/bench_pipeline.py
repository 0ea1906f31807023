"""Images per second of the input pipeline, tinyalex against torch's DataLoader, in one run.

The work is the 2012 paper's (sections 2 and 4.1): decode a JPEG, scale its shorter side
to 256 and crop the central 256x256, then a random 227x227 crop, a random mirror, scaling
to [0, 1], PCA lighting and normalisation, in batches of 128 float32 images. Contenders:

- tinyalex ImageFolder -> DataLoader(workers=N), the alexnet2012 training transforms;
- tinyalex prepared shards (``tinyalex prepare``, decoded once, memory-mapped) ->
  DataLoader(workers=N): only the augmentation is left per epoch;
- torch.utils.data.DataLoader(num_workers=N) with Pillow doing the decode, resize and
  crops per image and torch doing the rest (the usual torchvision-style recipe, written out
  with Pillow and torch so no torchvision is needed).

N = 1 and 2. Each contender runs two epochs over the same images; the second is timed
(pools started and files in the page cache). The images are synthetic JPEGs of 500x375
(ImageNet's typical size), made once under --images.

    PYTHONPATH=. python benchmarks/bench_pipeline.py --out benchmarks/results/pipeline.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np

BATCH = 128


def make_images(root, count, classes=8):
    """count synthetic 500x375 JPEGs (smooth colour fields with noise, which compress like
    photographs) in root/train/CLASS/, once."""
    from PIL import Image
    folder = os.path.join(root, "train")
    if os.path.isdir(folder) and sum(len(f) for _, _, f in os.walk(folder)) >= count:
        return
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500] / 500.0
    for i in range(count):
        c = rng.uniform(0, 1, (3, 3))
        field = np.stack([c[k, 0] * np.sin(6 * x + c[k, 1] * 9) + c[k, 2] * np.cos(5 * y) for k in range(3)], -1)
        pixels = np.clip(128 + 60 * field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        d = os.path.join(folder, f"class{i % classes}")
        os.makedirs(d, exist_ok=True)
        Image.fromarray(pixels).save(os.path.join(d, f"{i:05d}.jpg"), quality=90)
    val = os.path.join(root, "val", "class0")                 # prepare wants a val split
    os.makedirs(val, exist_ok=True)
    Image.fromarray(np.zeros((375, 500, 3), np.uint8)).save(os.path.join(val, "0.jpg"))


def time_epochs(iterate):
    """Seconds of the second of two passes, and the images it yielded."""
    iterate()
    start = time.perf_counter()
    images = iterate()
    return time.perf_counter() - start, images


def tinyalex_loader(dataset, workers):
    from tinyalex.utils.data.loader import DataLoader
    from tinyalex.train.data.run_data import transforms_for
    loader = DataLoader(dataset, BATCH, shuffle=True, seed=0, transform=transforms_for("alexnet2012", True),
                        workers=workers)
    epoch = [0]

    def run():
        loader.set_epoch(epoch[0])
        epoch[0] += 1
        return sum(len(labels) for _, labels in loader)
    return loader, run


class TorchPillowDataset:
    """Decode, resize (shorter side 256, bilinear) and centre-crop with Pillow, then the
    paper's augmentation on a uint8 tensor; one image per __getitem__, as torch expects."""

    def __init__(self, samples):
        import torch
        self.samples = samples
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        self.eigval = torch.tensor([0.2175, 0.0188, 0.0045])
        self.eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140],
                                    [-0.5836, -0.6948, 0.4203]])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        import torch
        from PIL import Image
        path, label = self.samples[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            s = 256 / min(w, h)
            image = image.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)
            left, top = (image.size[0] - 256) // 2, (image.size[1] - 256) // 2
            image = image.crop((left, top, left + 256, top + 256))
            top, left = torch.randint(0, 30, (2,)).tolist()
            image = image.crop((left, top, left + 227, top + 227))
            if torch.rand(()) < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float().div_(255)
        alpha = torch.randn(3) * 0.1
        x += (self.eigvec @ (alpha * self.eigval)).view(3, 1, 1)
        return (x - self.mean) / self.std, label


def torch_loader(samples, workers):
    import torch
    loader = torch.utils.data.DataLoader(TorchPillowDataset(samples), batch_size=BATCH, shuffle=True,
                                         num_workers=workers, persistent_workers=workers > 0)

    def run():
        return sum(len(labels) for _, labels in loader)
    return loader, run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="/tmp/tinyalex-bench-images")
    parser.add_argument("--count", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    from tinyalex.train.data.image_folder import ImageFolder
    from tinyalex.train.data.shards import ShardDataset, prepare
    make_images(args.images, args.count)
    folder = ImageFolder(os.path.join(args.images, "train"))
    shards_dir = args.images + "-shards"
    start = time.perf_counter()
    prepare(args.images, shards_dir, workers=max(args.workers), log=lambda line: None)
    prepare_s = time.perf_counter() - start
    shards = ShardDataset(os.path.join(shards_dir, "train"))
    load = os.getloadavg()
    results = dict(images=len(folder), batch=BATCH, load_before=load,
                   prepare=dict(seconds=prepare_s, images_per_s=len(folder) / prepare_s,
                                workers=max(args.workers)), runs=[])
    print(f"{len(folder)} JPEGs 500x375, batch {BATCH}, load {load[0]:.2f}; prepare with "
          f"{max(args.workers)} workers: {len(folder) / prepare_s:.0f} images/s (once)")
    for workers in args.workers:
        for name, make in (("tinyalex ImageFolder", lambda w: tinyalex_loader(folder, w)),
                           ("tinyalex shards", lambda w: tinyalex_loader(shards, w)),
                           ("torch DataLoader + Pillow", lambda w: torch_loader(folder.samples, w))):
            loader, run = make(workers)
            seconds, count = time_epochs(run)
            if hasattr(loader, "close"):
                loader.close()
            del loader
            rate = count / seconds
            results["runs"].append(dict(pipeline=name, workers=workers, images_per_s=rate, seconds=seconds))
            print(f"  {name:26s} workers {workers}: {rate:7.0f} images/s", flush=True)
    results["load_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
