"""Base classes that decide how strict each side of the wire is.

Bodies the server accepts are strict (a typo in a queue field must be a 400,
not silently ignored); bodies that clients and nodes read are lenient so an
older client keeps working against a newer server that adds fields.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictBody(BaseModel):
    """A request body: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


class TolerantBody(BaseModel):
    """A response body: unknown fields are kept, never an error."""

    model_config = ConfigDict(extra="allow")
