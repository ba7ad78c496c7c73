"""Pretrained networks: where their weights are found and how they are loaded."""
