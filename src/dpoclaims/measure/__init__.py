"""Measurements: generation, scoring, perplexity/F1, captured activations, the four-group decomposition, and their cache."""
