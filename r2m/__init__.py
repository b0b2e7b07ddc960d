"""R2M: Real-Time Aligned Reward Model, as a reproducible RLHF pipeline."""

__version__ = "0.1.0"
