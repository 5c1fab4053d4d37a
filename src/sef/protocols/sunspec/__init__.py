"""SunSpec over Modbus: model definitions, a server-side register image, an async client.

Offsets, sizes, types and scale-factor names come from pysunspec2's model files; see
``docs/battery.md`` for the battery register map.
"""

from __future__ import annotations

from .client import ModelInstance, PointValue, SunSpecClient
from .errors import (
    ModelMissingError,
    NotSunSpecError,
    PointError,
    SunSpecCommError,
    SunSpecError,
    SunSpecExceptionResponse,
    SunSpecValueError,
)
from .image import SunSpecImage, choose_sf
from .mdef import BASE_ADDRESSES, END_MODEL_ID, SUNS_MARKER, ModelDef, PointDef, model_def

__all__ = [
    "BASE_ADDRESSES",
    "END_MODEL_ID",
    "SUNS_MARKER",
    "ModelDef",
    "ModelInstance",
    "ModelMissingError",
    "NotSunSpecError",
    "PointDef",
    "PointError",
    "PointValue",
    "SunSpecClient",
    "SunSpecCommError",
    "SunSpecError",
    "SunSpecExceptionResponse",
    "SunSpecImage",
    "SunSpecValueError",
    "choose_sf",
    "model_def",
]
