"""``python -m openbeepboop_node`` is ``openbeepboop-node``."""

from openbeepboop_node.cli import main

if __name__ == "__main__":
    main()
