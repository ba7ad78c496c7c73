"""Tasks: what the examples are, how they are batched, and how predictions are scored."""
