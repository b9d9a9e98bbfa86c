"""Graders in OpenAI's reinforcement fine-tuning shapes: one module per grader type, chosen by `type` (registry.py).

The spec package loads first: graders are spec sections (cluster/spec/base.py), and the spec's `train.grpo`
holds graders, so whichever side is imported first, the spec's modules finish before any grader module runs.
"""

import cluster.spec  # noqa: F401
