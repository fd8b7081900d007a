"""The database layer's tests: connections, SQLite settings, migrations."""
