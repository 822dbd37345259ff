"""emolab.models (see SPEC; filled in by its own issue)."""
