"""The run: the one pipeline, its unit loop, checkpoints, the distributed launcher and checks."""
