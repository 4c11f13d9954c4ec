"""Each framework's hardware floor, measured in its own environment (benchmarks/floor.py runs
them one after another): common.py is what they share, <framework>.py how that framework runs
the training step fastest."""
