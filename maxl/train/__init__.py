"""Training: the one step path, schedules, the trainer loop, checkpoints, checks, logging."""
