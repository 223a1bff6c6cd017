"""Floor 2: reading users' data formats, cleaning and the injected defects."""
