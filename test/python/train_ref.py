"""Training with the PyTorch reference (docs/model.md's loss and optimiser), for training-parity tests."""
import torch

from pepnet_ref import RefOptimizer

torch.set_num_threads(1)


def train_step(model, opt, batch, l2=None):
    """One optimiser step on one batch dict; returns the loss (float) before the update."""
    model.train()
    logits = model(batch["domain"], batch["persona"], batch["features"], batch.get("dense"), train=True)
    loss = model.loss(logits, batch["labels"], l2)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def train_steps(model, batches, lr=1e-3, l2=None, opt=None):
    """Run one reference optimiser step per batch (dicts: domain, persona, features, dense, labels); return losses."""
    if opt is None:
        opt = RefOptimizer(model, lr=lr)
    return [train_step(model, opt, b, l2) for b in batches]
