"""emolab.train (see SPEC; filled in by its own issue)."""
