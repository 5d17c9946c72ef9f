"""Measuring methods that work on plain arrays and torch objects, below the experiments."""
