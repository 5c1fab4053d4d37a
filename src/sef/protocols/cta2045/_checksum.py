"""CTA-2045 frame checksum: Fletcher-16 variant with the first sum seeded with 0xAA.

Reference notes section 4 [≥2 src]: both sums are reduced mod 255, the check bytes are
``CK1 = 255 − ((s1 + s2) mod 255)`` and ``CK2 = 255 − ((s1 + CK1) mod 255)``, sent CK1 first.
"""

from __future__ import annotations

__all__ = ["CHECKSUM_SEED", "checksum", "verify_checksum"]

CHECKSUM_SEED = 0xAA


def _sums(data: bytes) -> tuple[int, int]:
    s1, s2 = CHECKSUM_SEED, 0
    for byte in data:
        s1 = (s1 + byte) % 255
        s2 = (s2 + s1) % 255
    return s1, s2


def checksum(data: bytes) -> bytes:
    """Return the two check bytes ``CK1 CK2`` for ``data`` (header + payload)."""
    s1, s2 = _sums(data)
    ck1 = 255 - ((s1 + s2) % 255)
    ck2 = 255 - ((s1 + ck1) % 255)
    return bytes((ck1, ck2))


def verify_checksum(frame: bytes) -> bool:
    """Return True if the last two bytes of ``frame`` are its correct check bytes."""
    if len(frame) < 2:
        return False
    return checksum(frame[:-2]) == frame[-2:]
