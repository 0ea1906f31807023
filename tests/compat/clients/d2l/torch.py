"""d2l.torch's helpers for the AlexNet chapter (d2l.ai, "Deep Convolutional Neural
Networks (AlexNet)"), written as the book has them with only the imports changed:
``import torch`` -> ``import tinyalex as torch``, and likewise for torch.nn and
torch.utils.data.

Changed, and why:
- ``torchvision.datasets.FashionMNIST`` and ``torchvision.transforms`` are replaced by the
  small ``FashionMNIST``, ``Resize``, ``ToTensor`` and ``Compose`` below (torchvision is
  not a dependency, and CI has no network). They read the Debian package
  dataset-fashion-mnist when it is installed, else draw a synthetic stand-in, and keep
  the first ``IMAGES[split]`` images so that the chapter runs in seconds.
- ``Animator`` records the points it is given instead of drawing them in a notebook.
"""
import sys
import time

import numpy as np

import tinyalex as torch
from tinyalex import nn
from tinyalex.utils import data

d2l = sys.modules[__name__]

#: How many images of each split the stand-in for torchvision's FashionMNIST keeps.
IMAGES = {"train": 10, "test": 4}


# --- the stand-in for torchvision -----------------------------------------------------
class FashionMNIST(data.Dataset):
    """torchvision.datasets.FashionMNIST's interface: (image, label) samples through
    ``transform``, from tinyalex.train.data's reader of the IDX files."""

    def __init__(self, root, train=True, transform=None, download=False):
        from tinyalex.train.data.fashion_mnist import load_fashion_mnist
        split = "train" if train else "test"
        try:
            dataset = load_fashion_mnist(split)
            self.images = dataset.images[:IMAGES[split]]
            self.labels = dataset.labels[:IMAGES[split]]
        except FileNotFoundError:  # no dataset package: a class-dependent synthetic stand-in
            rng = np.random.default_rng(0 if train else 1)
            self.labels = rng.integers(0, 10, IMAGES[split])
            pattern = rng.integers(0, 256, (10, 28, 28))
            noise = rng.integers(0, 64, (IMAGES[split], 28, 28))
            self.images = np.clip(pattern[self.labels] + noise, 0, 255).astype(np.uint8)
        self.transform = transform

    def __getitem__(self, index):
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), int(self.labels[index])

    def __len__(self):
        return len(self.images)


class Resize:
    def __init__(self, size):
        from tinyalex.train.data.transforms import Resize
        self.resize = Resize(size)

    def __call__(self, image):
        return self.resize(image[None])[0]


class ToTensor:
    """uint8 (H, W) -> float32 (1, H, W) in [0, 1], as torchvision's ToTensor."""

    def __call__(self, image):
        return torch.tensor(image[None].astype(np.float32) / 255)


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image):
        for t in self.transforms:
            image = t(image)
        return image


class transforms:
    Resize, ToTensor, Compose = Resize, ToTensor, Compose


class torchvision:
    class datasets:
        FashionMNIST = FashionMNIST


class Animator:
    """Records (x, y) points per line instead of plotting them in a notebook."""

    def __init__(self, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None,
                 xscale='linear', yscale='linear', fmts=('-', 'm--', 'g-.', 'r:'),
                 nrows=1, ncols=1, figsize=(3.5, 2.5)):
        self.legend = legend
        self.X, self.Y = None, None

    def add(self, x, y):
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if not self.X:
            self.X = [[] for _ in range(n)]
        if not self.Y:
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y)):
            if a is not None and b is not None:
                self.X[i].append(a)
                self.Y[i].append(b)


# --- d2l.torch, as the book has it ------------------------------------------------------
class Timer:
    """Record multiple running times."""
    def __init__(self):
        self.times = []
        self.start()

    def start(self):
        """Start the timer."""
        self.tik = time.time()

    def stop(self):
        """Stop the timer and record the time in a list."""
        self.times.append(time.time() - self.tik)
        return self.times[-1]

    def avg(self):
        """Return the average time."""
        return sum(self.times) / len(self.times)

    def sum(self):
        """Return the sum of time."""
        return sum(self.times)

    def cumsum(self):
        """Return the accumulated time."""
        return np.array(self.times).cumsum().tolist()


class Accumulator:
    """For accumulating sums over `n` variables."""
    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def reset(self):
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]


def try_gpu(i=0):
    """Return gpu(i) if exists, otherwise return cpu()."""
    if torch.cuda.device_count() >= i + 1:
        return torch.device(f'cuda:{i}')
    return torch.device('cpu')


def get_dataloader_workers():
    """Use 4 processes to read the data."""
    return 4


def load_data_fashion_mnist(batch_size, resize=None):
    """Download the Fashion-MNIST dataset and then load it into memory."""
    trans = [transforms.ToTensor()]
    if resize:
        trans.insert(0, transforms.Resize(resize))
    trans = transforms.Compose(trans)
    mnist_train = torchvision.datasets.FashionMNIST(
        root="../data", train=True, transform=trans, download=True)
    mnist_test = torchvision.datasets.FashionMNIST(
        root="../data", train=False, transform=trans, download=True)
    return (data.DataLoader(mnist_train, batch_size, shuffle=True,
                            num_workers=get_dataloader_workers()),
            data.DataLoader(mnist_test, batch_size, shuffle=False,
                            num_workers=get_dataloader_workers()))


def accuracy(y_hat, y):
    """Compute the number of correct predictions."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


def evaluate_accuracy_gpu(net, data_iter, device=None):
    """Compute the accuracy for a model on a dataset using a GPU."""
    if isinstance(net, nn.Module):
        net.eval()  # Set the model to evaluation mode
        if not device:
            device = next(iter(net.parameters())).device
    # No. of correct predictions, no. of predictions
    metric = Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            if isinstance(X, list):
                # Required for BERT Fine-tuning (to be covered later)
                X = [x.to(device) for x in X]
            else:
                X = X.to(device)
            y = y.to(device)
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


def train_ch6(net, train_iter, test_iter, num_epochs, lr, device):
    """Train a model with a GPU (defined in Chapter 6)."""
    def init_weights(m):
        if type(m) == nn.Linear or type(m) == nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)
    net.apply(init_weights)
    print('training on', device)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    animator = d2l.Animator(xlabel='epoch', xlim=[1, num_epochs],
                            legend=['train loss', 'train acc', 'test acc'])
    timer, num_batches = d2l.Timer(), len(train_iter)
    for epoch in range(num_epochs):
        # Sum of training loss, sum of training accuracy, no. of examples
        metric = d2l.Accumulator(3)
        net.train()
        for i, (X, y) in enumerate(train_iter):
            timer.start()
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            l = loss(y_hat, y)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                metric.add(l * X.shape[0], d2l.accuracy(y_hat, y), X.shape[0])
            timer.stop()
            train_l = metric[0] / metric[2]
            train_acc = metric[1] / metric[2]
            if (i + 1) % (num_batches // 5) == 0 or i == num_batches - 1:
                animator.add(epoch + (i + 1) / num_batches,
                             (train_l, train_acc, None))
        test_acc = evaluate_accuracy_gpu(net, test_iter)
        animator.add(epoch + 1, (None, None, test_acc))
    print(f'loss {train_l:.3f}, train acc {train_acc:.3f}, '
          f'test acc {test_acc:.3f}')
    print(f'{metric[2] * num_epochs / timer.sum():.1f} examples/sec '
          f'on {str(device)}')
