"""PyTorch's 60 Minute Blitz, "Neural Networks" (neural_networks_tutorial.py), on tinyalex.

Every statement of the tutorial runs as written; only the imports changed
(`import torch` -> `import tinyalex as torch`, and likewise for torch.nn,
torch.nn.functional and torch.optim). Each step is followed by assertions, and the
numbers are checked against real PyTorch running the same network with the same weights.

Statements changed: none. The tutorial's statements sit in one test function (rather
than at module level) so that pytest runs them; `Net` is at module level as in the
tutorial. What torch prints and tinyalex cannot (the graph's node names, which follow
each library's own ops) is asserted structurally, see the grad_fn step.
"""
import numpy as np
import torch as real_torch
import torch.nn.functional as real_F

import tinyalex as torch
import tinyalex.nn as nn
import tinyalex.nn.functional as F


class Net(nn.Module):

    def __init__(self):
        super(Net, self).__init__()
        # 1 input image channel, 6 output channels, 5x5 square convolution
        # kernel
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        # an affine operation: y = Wx + b
        self.fc1 = nn.Linear(16 * 5 * 5, 120)  # 5*5 from image dimension
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, input):
        # Convolution layer C1: 1 input image channel, 6 output channels,
        # 5x5 square convolution, it uses RELU activation function, and
        # outputs a Tensor with size (N, 6, 28, 28), where N is the size of the batch
        c1 = F.relu(self.conv1(input))
        # Subsampling layer S2: 2x2 grid, purely functional,
        # this layer does not have any parameter, and outputs a (N, 6, 14, 14) Tensor
        s2 = F.max_pool2d(c1, (2, 2))
        # Convolution layer C3: 6 input channels, 16 output channels,
        # 5x5 square convolution, it uses RELU activation function, and
        # outputs a (N, 16, 10, 10) Tensor
        c3 = F.relu(self.conv2(s2))
        # Subsampling layer S4: 2x2 grid, purely functional,
        # this layer does not have any parameter, and outputs a (N, 16, 5, 5) Tensor
        s4 = F.max_pool2d(c3, 2)
        # Flatten operation: purely functional, outputs a (N, 400) Tensor
        s4 = torch.flatten(s4, 1)
        # Fully connected layer F5: (N, 400) Tensor input,
        # and outputs a (N, 120) Tensor, it uses RELU activation function
        f5 = F.relu(self.fc1(s4))
        # Fully connected layer F6: (N, 120) Tensor input,
        # and outputs a (N, 84) Tensor, it uses RELU activation function
        f6 = F.relu(self.fc2(f5))
        # Gaussian layer OUTPUT: (N, 84) Tensor input, and
        # outputs a (N, 10) Tensor
        output = self.fc3(f6)
        return output


# --- real PyTorch, for the numbers -------------------------------------------------------
def torch_forward(net, x):
    """The tutorial's forward in real torch (float64), with net's current weights, and
    those weights as torch leaves."""
    w = {k: real_torch.tensor(v.numpy(), dtype=real_torch.float64, requires_grad=True)
         for k, v in net.state_dict().items()}
    x = real_torch.tensor(np.asarray(x), dtype=real_torch.float64)
    x = real_F.max_pool2d(real_F.relu(real_F.conv2d(x, w["conv1.weight"], w["conv1.bias"])), (2, 2))
    x = real_F.max_pool2d(real_F.relu(real_F.conv2d(x, w["conv2.weight"], w["conv2.bias"])), 2)
    x = real_torch.flatten(x, 1)
    x = real_F.relu(real_F.linear(x, w["fc1.weight"], w["fc1.bias"]))
    x = real_F.relu(real_F.linear(x, w["fc2.weight"], w["fc2.bias"]))
    return real_F.linear(x, w["fc3.weight"], w["fc3.bias"]), w


def assert_close(ours, theirs, rtol=2e-5):
    ours, theirs = np.asarray(ours, np.float64), theirs.detach().numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())


def test_neural_networks_tutorial(capsys):
    torch.manual_seed(0)

    net = Net()
    print(net)
    assert "(conv1): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))" in capsys.readouterr().out

    params = list(net.parameters())
    print(len(params))
    print(params[0].size())  # conv1's .weight
    assert len(params) == 10 and params[0].size() == (6, 1, 5, 5)

    input = torch.randn(1, 1, 32, 32)
    out = net(input)
    print(out)
    assert out.shape == (1, 10) and out.dtype == torch.float32
    expected, weights = torch_forward(net, input)
    assert_close(out.detach(), expected)

    net.zero_grad()
    out.backward(torch.randn(1, 10))
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())

    output = net(input)
    target = torch.randn(10)  # a dummy target, for example
    target = target.view(1, -1)  # make it the same shape as output
    criterion = nn.MSELoss()

    loss = criterion(output, target)
    print(loss)
    expected_loss = real_F.mse_loss(torch_forward(net, input)[0],
                                    real_torch.tensor(target.numpy(), dtype=real_torch.float64))
    assert loss.shape == () and abs(loss.item() - expected_loss.item()) < 1e-5 * expected_loss.item()

    print(loss.grad_fn)  # MSELoss
    print(loss.grad_fn.next_functions[0][0])  # Linear
    print(loss.grad_fn.next_functions[0][0].next_functions[0][0])  # ReLU
    # torch's fc3 is one Addmm node whose first edge is the bias's AccumulateGrad; in
    # tinyalex it is one Linear node whose first edge is fc2's ReLU.
    printed = capsys.readouterr().out
    assert "<MSELossBackward>\n<LinearBackward>\n<ReLUBackward>\n" in printed
    linear = loss.grad_fn.next_functions[0][0]
    assert loss.grad_fn.next_functions[1] == (None, 0)  # the target needs no gradient
    assert [type(f).__name__ for f, _ in linear.next_functions[1:]] == ["AccumulateGrad"] * 2
    assert linear.next_functions[1][0].variable is net.fc3.weight

    net.zero_grad()     # zeroes the gradient buffers of all parameters

    print('conv1.bias.grad before backward')
    print(net.conv1.bias.grad)
    assert net.conv1.bias.grad is None

    loss.backward()

    print('conv1.bias.grad after backward')
    print(net.conv1.bias.grad)
    reference, weights = torch_forward(net, input)
    real_F.mse_loss(reference, real_torch.tensor(target.numpy(), dtype=real_torch.float64)).backward()
    assert_close(net.conv1.bias.grad, weights["conv1.bias"].grad, rtol=1e-4)
    assert_close(net.fc1.weight.grad, weights["fc1.weight"].grad, rtol=1e-4)

    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    learning_rate = 0.01
    for f in net.parameters():
        f.data.sub_(f.grad.data * learning_rate)
    for name, p in net.named_parameters():  # updated in place, by exactly -lr * grad
        np.testing.assert_allclose(p.detach().numpy(), before[name] - 0.01 * p.grad.numpy(),
                                   rtol=1e-6, atol=1e-7)
        assert p.requires_grad and p.grad_fn is None

    import tinyalex.optim as optim

    # create your optimizer
    optimizer = optim.SGD(net.parameters(), lr=0.01)

    # in your training loop:
    optimizer.zero_grad()   # zero the gradient buffers
    output = net(input)
    loss = criterion(output, target)
    loss.backward()
    optimizer.step()    # Does the update
    assert net.conv1.bias.grad is not None
    assert criterion(net(input), target).item() < loss.item()  # the step went downhill
