"""Base classes that decide how strict each side of the wire is.

Bodies the server accepts are strict (a typo in a queue field must be a 400,
not silently ignored); bodies that clients and nodes read are lenient so an
older client keeps working against a newer server that adds fields.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictFloat


class StrictBody(BaseModel):
    """A request body: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


class TolerantBody(BaseModel):
    """A response body: unknown fields are kept, never an error."""

    model_config = ConfigDict(extra="allow")


def _json_number(value: object) -> object:
    if isinstance(value, (bool, str, bytes)):
        raise ValueError("Input should be a JSON number")
    return value


# Scalars of request bodies take only their own JSON type: pydantic's lax mode
# would read ``true`` or ``"5"`` as a number, which the OpenAPI document forbids.
#: An integer field of a request (``228.0`` is still 228, as JSON Schema has it).
JsonInt = Annotated[int, BeforeValidator(_json_number)]
#: A number field of a request (a strict float still takes an integer).
JsonFloat = StrictFloat
#: A boolean field of a request.
JsonBool = StrictBool
