"""Floor 2: the paired statistics behind every verdict (ours, hand-written)."""
