"""Training on ``transformers.Trainer``: ``fit`` (one run from the checkpoint it is given),
the trainer base, argument mapping, freeze masks, progress, FSDP2 on CPU ranks."""
