"""The command line's tests: CliRunner, and the installed script in a subprocess."""
