"""Datasets, the bundled synthetic data and the input pipelines."""
