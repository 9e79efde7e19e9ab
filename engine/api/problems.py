"""What the API answers when it does not do what was asked: `{"error": {"code", "message", "field"}}`.

400 the body is not JSON, or a field is unknown, missing or of the wrong type; 401 no token, or one nobody
holds; 403 the token's role may not do that; 404 no such route, strategy, account or command; 405 a method
the route does not take; 409 the strategy's state does not allow it (the lifecycle table's reason); 413 the
body is over the size limit; 422 a value the schema or the engine refuses (a config reload: a file that does
not load); 503 the engine did not answer in time. A refusal by the engine carries its CommandResult beside the
error, a refused reload its ReloadResult (the diff and every problem).
"""
import re

import msgspec

from engine.commands import CommandResult
from engine.reload import ReloadResult

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         408: "timeout", 409: "conflict", 413: "too_large", 422: "invalid", 500: "internal", 503: "unavailable"}


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    code: str             # one word per kind of problem (CODES, plus "bad_json" and "bad_field" for a 400)
    message: str
    field: str | None = None  # where in the body ("$.max_order_qty") or which header, when one is to blame


class ErrorResponse(msgspec.Struct, frozen=True, kw_only=True):
    error: Problem
    result: CommandResult | None = None  # a command the engine refused: its result (ok false, the error)
    reload: ReloadResult | None = None   # a reload refused: its diff and every problem


class ApiError(Exception):
    """Raised anywhere in a handler; the app answers it as `ErrorResponse` with `status`."""

    def __init__(self, status, message, *, code=None, field=None, result=None, reload=None):
        super().__init__(message)
        self.status = status
        self.problem = Problem(code=code or CODES[status], message=message, field=field)
        self.result, self.reload = result, reload

    def body(self):
        return ErrorResponse(error=self.problem, result=self.result, reload=self.reload)


_WRONG_TYPE = re.compile(r"^Expected `[^`]+`, got `[^`]+`$")


def decode_problem(error: msgspec.MsgspecError) -> ApiError:
    """A body msgspec could not decode: 400 when it is not JSON or a field is unknown, missing or of the wrong
    type; 422 when a value is of the right type but out of its range or choices."""
    if not isinstance(error, msgspec.ValidationError):
        return ApiError(400, f"the body is not valid JSON: {error}", code="bad_json")
    message = str(error)
    text, field = _split(message)
    if match := re.match(r"^Object (contains unknown|missing required) field `(.+)`$", text):
        return ApiError(400, message, code="bad_field", field=f"{field}.{match[2]}")
    if _WRONG_TYPE.match(text):
        return ApiError(400, message, code="bad_field", field=field)
    return ApiError(422, message, field=field)


def refusal(result: CommandResult) -> ApiError:
    """The status of a command the engine refused, from its error: an unknown name (or strategy file) is 404, a
    state that does not allow it ("cannot ...", the lifecycle table's words) 409, any other value it refused
    422."""
    message = str(result.error)
    if message.startswith("unknown ") or ": file not found;" in message:
        return ApiError(404, message, result=result)
    if message.startswith("cannot "):
        return ApiError(409, message, result=result)
    _, field = _split(message)
    return ApiError(422, message, field=field if field != "$" else None, result=result)


def _split(message):
    """("Expected ...", "$.path") from msgspec's "Expected ... - at `$.path`" ("$" when it names no path)."""
    text, sep, where = message.rpartition(" - at `")
    return (text, where.rstrip("`")) if sep else (message, "$")
