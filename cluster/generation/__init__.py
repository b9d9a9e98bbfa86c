"""Batch generation on Ray Data and vLLM: `rayfit generate`, evaluation's answers, and on-policy pairs."""
