"""Argument checks shared by every store: ids, super-steps, labels and durations."""

from __future__ import annotations

import math
from datetime import timedelta

MAX_SUPER_STEP = 2**53 - 1
"""Super-steps are sorted-set scores (IEEE doubles), exact up to 2**53 - 1."""


def check_id(value: object, what: str) -> str:
    """Validate a workflow or run id: a non-empty string that encodes as UTF-8."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    _check_utf8(value, what)
    return value


def check_super_step(value: object) -> int:
    """Validate a super-step: an int (not a bool) in 0..2**53-1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"super_step must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"super_step must be >= 0, got {value}")
    if value > MAX_SUPER_STEP:
        raise ValueError(f"super_step must be <= {MAX_SUPER_STEP}, got {value}")
    return value


MAX_TIMESTAMP_MS = 2**63 - 1
"""The largest timestamp every store holds: a signed 64-bit integer (what Redis integers,
orjson and SQL ``BIGINT`` take)."""


def check_timestamp_ms(value: object) -> int:
    """Validate a timestamp in milliseconds since the epoch: an int (not a bool) in
    0..2**63-1, so that every store accepts and refuses the same ones."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"timestamp_ms must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise ValueError(f"timestamp_ms must be in 0..{MAX_TIMESTAMP_MS}, got {value}")
    return value


def check_text(value: object, what: str) -> str:
    """Validate free text such as a label: a string that encodes as UTF-8."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    _check_utf8(value, what)
    return value


def _check_utf8(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid unicode (lone surrogate): {value!r}") from None


MAX_DURATION_MS = 10**14
"""The longest duration accepted (about 3,170 years): a deadline ``now + 2 x duration`` stays an
exact integer in Lua's doubles and in Redis's ``PEXPIREAT``."""


def duration_to_ms(value: float | timedelta | None, what: str = "ttl") -> int | None:
    """Normalise a duration option (seconds or timedelta) to whole milliseconds, or None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{what} must be seconds or a timedelta, not {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what} must be a positive duration, got {value!r}")
    if seconds * 1000 > MAX_DURATION_MS:
        raise ValueError(f"{what} must be at most {MAX_DURATION_MS // 1000} s, got {value!r}")
    return max(1, round(seconds * 1000))


def ttl_to_ms(ttl: float | timedelta | None) -> int | None:
    """Normalise a ``ttl=`` option (seconds or timedelta) to whole milliseconds, or None."""
    return duration_to_ms(ttl, "ttl")


def check_positive_int(value: object, what: str) -> int:
    """Validate an option such as ``keep_last`` or ``limit``: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return value


def check_owner(value: object) -> str:
    """Validate a lease owner: a non-empty string that encodes as UTF-8."""
    return check_id(value, "owner")


def check_prefix(prefix: object) -> str:
    """Validate a key prefix: a non-empty string without braces (they would become the hash tag)."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    if not prefix:
        raise ValueError("prefix must not be empty")
    if "{" in prefix or "}" in prefix:
        raise ValueError(
            f"prefix must not contain '{{' or '}}' (it would become the cluster hash tag): "
            f"{prefix!r}"
        )
    return prefix
