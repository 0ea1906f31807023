"""d2l.ai's AlexNet chapter ("Deep Convolutional Neural Networks (AlexNet)"), on tinyalex.

The chapter's statements with only the imports changed (`import torch` -> `import
tinyalex as torch`, `from torch import nn` -> `from tinyalex import nn`); its helpers
(`try_gpu`, `Accumulator`, `accuracy`, `evaluate_accuracy_gpu`, `train_ch6`, ...) are in
tests/compat/clients/d2l/torch.py as the book has them, so `from d2l import torch as d2l` is
unchanged too. Each step is asserted, and against real PyTorch where the numbers can be
compared (dropout masks cannot: the random streams differ).

Statements changed, and why:
- `batch_size = 128` -> `batch_size = 2` and `lr, num_epochs = 0.01, 10` ->
  `lr, num_epochs = 0.01, 1`, with 10 training and 4 test images (d2l/torch.py's
  IMAGES): the chapter's run takes hours on a CPU, and CI has seconds. The network and
  the 224x224 input are the chapter's.
"""
import numpy as np
import torch as real_torch

import tinyalex as torch
from d2l import torch as d2l
from tinyalex import nn


def alexnet(nn):
    """The chapter's network, built with either library's nn (for the torch twin)."""
    return nn.Sequential(
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 10))


class RecordingAnimator(d2l.Animator):
    """d2l's Animator, keeping each instance so that the test can read what was plotted."""
    made = []

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.made.append(self)




def test_alexnet_chapter(capsys, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(d2l, "Animator", RecordingAnimator)

    net = nn.Sequential(
        # Here, we use a larger 11 x 11 window to capture objects. At the same
        # time, we use a stride of 4 to greatly reduce the height and width of the
        # output. Here, the number of output channels is much larger than that in
        # LeNet
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        # Make the convolution window smaller, set padding to 2 for consistent
        # height and width across the input and output, and increase the number of
        # output channels
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        # Use three successive convolutional layers and a smaller convolution
        # window. Except for the final convolutional layer, the number of output
        # channels is further increased. Pooling layers are not used to reduce the
        # height and width of input after the first two convolutional layers
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        # Here, the number of outputs of the fully-connected layer is several
        # times larger than that in LeNet. Use the dropout layer to mitigate
        # overfitting
        nn.Linear(6400, 4096), nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(),
        nn.Dropout(p=0.5),
        # Output layer. Since we are using Fashion-MNIST, the number of classes is
        # 10, instead of 1000 as in the paper
        nn.Linear(4096, 10))

    X = torch.randn(1, 1, 224, 224)
    for layer in net:
        X=layer(X)
        print(layer.__class__.__name__,'output shape:\t',X.shape)

    # the same loop on the same network in torch prints the same names and shapes
    lines = capsys.readouterr().out.splitlines()
    twin = alexnet(real_torch.nn)
    Y, expected = real_torch.zeros(1, 1, 224, 224), []
    for layer in twin:
        Y = layer(Y)
        expected.append(f"{layer.__class__.__name__} output shape:\t {tuple(Y.shape)}")
    assert lines == expected
    assert lines[-1] == "Linear output shape:\t (1, 10)"

    batch_size = 2
    train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size, resize=224)
    X, y = next(iter(train_iter))
    assert X.shape == (2, 1, 224, 224) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert len(train_iter) == 5 and len(test_iter) == 2

    lr, num_epochs = 0.01, 1
    d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, d2l.try_gpu())

    out = capsys.readouterr().out.splitlines()
    device = 'cuda:0' if torch.cuda.is_available() else 'cpu'
    assert out[0] == f"training on {device}"
    assert out[1].startswith("loss ") and ", train acc " in out[1] and ", test acc " in out[1]
    assert out[2].endswith(f"examples/sec on {device}")
    (animator,) = RecordingAnimator.made
    train_loss, train_acc, test_acc = animator.Y
    assert len(train_loss) == len(train_acc) == 5 and len(test_acc) == 1
    assert all(np.isfinite(train_loss)) and all(0 <= a <= 1 for a in train_acc + test_acc)
    assert all(a * 4 == int(a * 4) for a in test_acc)  # a count out of the 4 test images
    assert not net.training and str(next(iter(net.parameters())).device) == device

    # xavier_uniform_ (through net.apply) set the weights' scale: bound sqrt(6 / (in + out))
    w = net[-1].weight.detach().cpu().numpy()
    bound = np.sqrt(6 / (4096 + 10))
    assert 0.9 * bound < np.abs(w).max() < 1.1 * bound

    # the loss and gradients of train_ch6's step, in eval mode (no dropout), match torch's
    net.cpu()
    twin.load_state_dict({k: real_torch.from_numpy(v.numpy()) for k, v in net.state_dict().items()})
    twin.eval()
    loss, twin_loss = nn.CrossEntropyLoss(), real_torch.nn.CrossEntropyLoss()
    net.zero_grad()
    l = loss(net(X), y)
    l.backward()
    t = twin_loss(twin(real_torch.tensor(X.numpy())), real_torch.tensor(y.numpy()))
    t.backward()
    assert abs(l.item() - t.item()) < 1e-4 * max(1.0, t.item())
    for (name, ours), theirs in zip(net.named_parameters(), twin.parameters()):
        # float32 through eight layers, summed in different orders (reductions of up to
        # 10^5 terms): relative to the gradient's scale
        g, g_torch = ours.grad.numpy(), theirs.grad.numpy()
        assert np.abs(g - g_torch).max() <= 5e-3 * np.abs(g_torch).max(), name
