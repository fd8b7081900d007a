"""``python -m openbeepboop_server``: the ``openbeepboop-server`` command."""

from openbeepboop_server.cli import main

if __name__ == "__main__":
    main(prog_name="openbeepboop-server")
