"""The OpenAI error envelope every failed HTTP call answers with."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from openbeepboop_schemas._base import TolerantBody


class ErrorBody(TolerantBody):
    """What went wrong: ``param`` names the offending field when there is one."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(TolerantBody):
    """``{"error": {...}}`` as the OpenAI API returns it."""

    error: ErrorBody

    @classmethod
    def build(
        cls, message: str, type: str, param: str | None = None, code: str | None = None
    ) -> ErrorEnvelope:
        """One envelope from its four parts."""
        return cls(error=ErrorBody(message=message, type=type, param=param, code=code))

    @classmethod
    def from_validation_error(
        cls, exc: ValidationError, model: type[BaseModel] | None = None
    ) -> ErrorEnvelope:
        """A 400 envelope naming the first invalid field as a dotted path."""
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        where = f"'{param}': " if param else ""
        count = exc.error_count()
        more = f" (and {count - 1} more error{'s' if count > 2 else ''})" if count > 1 else ""
        return cls.build(
            message=f"{where}{first['msg']}{more}",
            type="invalid_request_error",
            param=param,
            code="invalid_value" if param else "invalid_body",
        )
