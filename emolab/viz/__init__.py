"""emolab.viz (see SPEC; filled in by its own issue)."""
