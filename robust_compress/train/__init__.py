"""Training: the one loop, the loss registry, per-example loss inputs and their logit cache."""
