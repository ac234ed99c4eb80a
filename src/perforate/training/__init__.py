"""The two ways to train dendrites: ``gd`` (gradient) and ``pb`` (correlation, perforated)."""
