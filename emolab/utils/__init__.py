"""Helpers below every layer: atomic files, LRU memory, process control, config-field metadata."""
