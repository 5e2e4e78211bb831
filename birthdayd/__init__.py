"""birthdayd: greets each user at 09:00 in their own time zone, exactly once."""

from __future__ import annotations

__version__ = "0.1.0"


class BirthdaydError(Exception):
    """Root of every error birthdayd raises on purpose."""
