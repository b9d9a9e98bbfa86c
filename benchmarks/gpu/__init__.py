"""One-GPU benchmark of rayfit's per-worker step: `python -m benchmarks.gpu` (see README.md)."""
