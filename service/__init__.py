"""lstm-serve's HTTP service: loads checkpoints at startup and serves them."""
