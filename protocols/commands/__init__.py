"""One module per `radsteer` subcommand (see protocols/cli.py)."""
