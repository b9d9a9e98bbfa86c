"""Finding and loading base models."""
