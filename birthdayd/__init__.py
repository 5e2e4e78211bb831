"""birthdayd: greets each user at 09:00 in their own time zone, exactly once."""

from __future__ import annotations

import zoneinfo

# Zone rules come from the pinned tzdata package, never from the host's zone
# files (which zoneinfo would search first): every replica, whatever its
# image or distribution, computes the same instants.  Every entry point
# imports this package first.
zoneinfo.reset_tzpath(to=[])

__version__ = "0.1.0"


class BirthdaydError(Exception):
    """Root of every error birthdayd raises on purpose."""
