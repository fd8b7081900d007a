"""OpenBeepBoop queue server."""
