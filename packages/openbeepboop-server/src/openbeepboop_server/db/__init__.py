"""Storage: the engine (:mod:`.database`), the schema (:mod:`.tables`) and its migrations."""
