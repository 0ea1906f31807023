"""The helpers of the book Dive into Deep Learning (d2l.ai) that its AlexNet chapter uses,
written as the book has them, against tinyalex: ``from d2l import torch as d2l``."""
