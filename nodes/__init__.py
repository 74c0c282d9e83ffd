"""Node daemons (issue 4)."""
