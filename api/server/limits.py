"""Process limits that a thousand simultaneous connections run into."""

from __future__ import annotations

import resource


def raise_file_limit(wanted: int) -> None:
    """Every socket is a descriptor: lift the soft limit towards ``wanted`` (up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
