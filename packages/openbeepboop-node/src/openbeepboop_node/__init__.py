"""OpenBeepBoop node."""
