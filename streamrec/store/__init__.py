"""Where model state lives between runs: signed checkpoints, their key, a pickle loading no code."""
