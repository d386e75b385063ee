"""Keyed hashing of personal identifiers (phone numbers, unionids, openids).

China's PIPL applies: raw identifiers never reach parquet, logs, MLflow or HTTP responses. A bare
SHA-256 of a phone number is trivially reversible (the space is ~10^10), so identifiers are hashed
with HMAC-SHA256 under a secret key taken from the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import os

PII_KEY_ENV = "SIYU_PII_KEY"


class MissingPIIKeyError(RuntimeError):
    """Raised when no HMAC key is configured for hashing personal identifiers."""


def pii_key(explicit: str | bytes | None = None) -> bytes:
    """The HMAC key: ``explicit`` if given, else the ``SIYU_PII_KEY`` environment variable."""
    key = explicit if explicit is not None else os.environ.get(PII_KEY_ENV)
    if not key:
        raise MissingPIIKeyError(
            f"set {PII_KEY_ENV} to a secret key before hashing personal identifiers"
        )
    return key.encode() if isinstance(key, str) else key


def hash_identifier(value: str, key: bytes) -> str:
    """HMAC-SHA256 of a normalised identifier, hex encoded (64 chars)."""
    normalised = value.strip().lower()
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()
