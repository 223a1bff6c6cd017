"""Floor 0: what every other module may use (files, errors, pinned numerics, run info)."""
