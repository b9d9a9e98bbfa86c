"""Training on Ray Train: the per-worker loop, DeepSpeed configs, checkpoints with manifests, and resume."""
