"""The benchmark suite behind `make bench` (see run.py)."""
