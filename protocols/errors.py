"""Re-export of the user-facing error type (defined in `steering.errors`, below every package)."""

from steering.errors import RadsteerError

__all__ = ["RadsteerError"]
