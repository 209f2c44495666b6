"""Public and synthetic data turned into event logs: MovieLens conversion, hidden-taste worlds."""
