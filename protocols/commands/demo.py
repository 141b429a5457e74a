"""`radsteer demo` — not implemented yet."""

from protocols.commands._pending import add_passthrough as add_arguments  # noqa: F401
from protocols.commands._pending import not_yet


def run(args) -> int:
    return not_yet("demo", "Study protocols, `radsteer run`")
