"""The ``Bytes``/``Seconds`` field types: the units a user types (see conveyor.units), parsed
before validation."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

from ..units import BYTES_HINT, DURATION_HINT, parse_bytes, parse_duration

__all__ = ["BYTES_HINT", "DURATION_HINT", "Bytes", "Seconds", "parse_bytes", "parse_duration"]

Bytes = Annotated[int, BeforeValidator(parse_bytes)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
