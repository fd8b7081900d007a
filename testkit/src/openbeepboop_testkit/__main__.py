"""``python -m openbeepboop_testkit``: run the stand-in LLM (see ``standin --help``)."""

from __future__ import annotations

from openbeepboop_testkit.standin import main

if __name__ == "__main__":
    main()
