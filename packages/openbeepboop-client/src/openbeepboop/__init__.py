"""OpenBeepBoop client library."""
