"""Plain helpers the tests call (fixtures live in the conftest.py of the folder that uses them)."""
