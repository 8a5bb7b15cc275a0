"""Classical baselines the deep-learning models are measured against."""
