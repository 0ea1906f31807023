"""Evaluation of a model over a data loader: loss, top-1 and top-5, optionally over the
paper's ten crops (section 4.1)."""
import numpy as np

from tinyalex import device as _device
from tinyalex import functional as F
from tinyalex.autograd import no_grad
from tinyalex.tensor import tensor
from tinyalex.train.data import transforms as T


def evaluate(model, loader, device, ten_crop_size=None, reduce=None):
    """(mean loss, top-1 accuracy, top-5 accuracy) over a loader, in eval mode. With
    ten_crop_size, each image's logits average its 10 crops (paper section 4.1).
    reduce: turns this process's [loss sum, top-1, top-5, seen] into the job's (data-parallel
    ranks each evaluate a shard and allreduce the four sums)."""
    model.eval()
    loss_sum, top1, top5, seen = 0.0, 0, 0, 0
    with no_grad():
        for images, labels in loader:
            if len(labels) == 0:  # --skip-bad-images left out a whole batch
                continue
            if ten_crop_size:
                crops = T.TenCrop(ten_crop_size)(images)
                logits = T.average_ten_crops(_device.to_device(
                    model(tensor(crops, device=device)).array, "cpu"))
                logits_t = tensor(logits)
            else:
                logits_t = model(tensor(images, device=device))
                logits = _device.to_device(logits_t.array, "cpu")
            # per-sample losses summed in float64: the total barely depends on how the test
            # set is cut into batches and rank shards
            losses = F.cross_entropy(logits_t, tensor(labels, device=logits_t.device), reduction="none")
            loss_sum += float(_device.to_device(losses.array, "cpu").astype(np.float64).sum())
            ranked = np.argsort(-logits, axis=1)[:, :5]
            top1 += int((ranked[:, 0] == labels).sum())
            top5 += int((ranked == labels[:, None]).any(axis=1).sum())
            seen += len(labels)
    model.train()
    if reduce is not None:
        loss_sum, top1, top5, seen = reduce([loss_sum, top1, top5, seen])
    return loss_sum / seen, top1 / seen, top5 / seen
