"""The training loop and its parts: batch samplers, optimizers, schedules, checkpoints."""
