"""Datasets: adapters that turn a dataset folder into a manifest, language splits, folds and trial lists."""
