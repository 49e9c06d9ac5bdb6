"""How long a step's result is reused: the steps' CacheConfig ``ExpireAfter``, and so how far
back a new execution can repeat an old one (the unchanged-since rule)."""
from __future__ import annotations

import re
from datetime import timedelta

CACHE_EXPIRE_AFTER = "P30D"
_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def parse_expire_after(text: str) -> timedelta:
    """An ISO 8601 duration as CacheConfig's ``ExpireAfter`` takes it (``P30D``, ``PT1H``, and
    the short forms SageMaker's guide shows: ``30d``, ``T16m``). Years count 365 days and
    months 30, which is all a cache expiry needs. ValueError for anything else."""
    normal = text.strip().upper()
    normal = normal if normal.startswith("P") else "P" + normal
    match = _DURATION.match(normal)
    if not match or normal in ("P", "PT") or normal.endswith("T"):
        raise ValueError(f"cannot read the cache expiry {text!r}; write an ISO 8601 duration such as P30D or PT12H")
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=365 * years + 30 * months + 7 * weeks + days, hours=hours, minutes=minutes, seconds=seconds)


CACHE_LIFETIME = parse_expire_after(CACHE_EXPIRE_AFTER)
