"""Training loops, datasets and losses for the shipped models."""
