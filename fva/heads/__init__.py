"""Stage 2: projection heads trained on cached features, per fold; scoring and submissions."""
