"""The one exception tree of tether; each error carries a stable `type` and an HTTP status.

    TetherError                       500  internal_error
    ├── BadRequestError               400  invalid_request
    │   └── PayloadTooLargeError      413  payload_too_large
    ├── AuthenticationError           401  unauthenticated
    │   └── KeyExpiredError           401  key_expired   (past its expiry or keys.max_age_days)
    ├── PermissionDeniedError         403  permission_denied
    │   └── PolicyDeniedError         403  policy_denied
    ├── BudgetExceededError           402  budget_exceeded
    ├── ApprovalRequiredError         409  approval_required
    ├── RunKilledError                409  run_killed
    ├── NotFoundError                 404  not_found
    ├── ConflictError                 409  conflict
    ├── RateLimitedError              429  rate_limited
    ├── UpstreamError                 502  upstream_error
    │   └── UpstreamTimeoutError      504  upstream_timeout
    └── ConfigError                   500  config_error   (also raised by the CLI, exit code 2)

Messages state the cause and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Any, ClassVar


def error_body(type_: str, message: str, code: str | None = None) -> dict[str, object]:
    """The JSON body of every error response: `{"error": {type, code, message}}`."""
    return {"error": {"type": type_, "code": code or type_, "message": message}}


class TetherError(Exception):
    """Base of every error tether raises on purpose."""

    type: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.type
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequestError(TetherError):
    type = "invalid_request"
    http_status = 400


class PayloadTooLargeError(BadRequestError):
    type = "payload_too_large"
    http_status = 413


class AuthenticationError(TetherError):
    type = "unauthenticated"
    http_status = 401


class KeyExpiredError(AuthenticationError):
    """A known key past its `expires_at` (code `key_expired`) or older than the rotation policy
    allows (code `key_too_old`): rotate it (`tether keys rotate KEY`)."""

    type = "key_expired"
    http_status = 401


class PermissionDeniedError(TetherError):
    type = "permission_denied"
    http_status = 403


class PolicyDeniedError(PermissionDeniedError):
    type = "policy_denied"
    http_status = 403


class BudgetExceededError(TetherError):
    type = "budget_exceeded"
    http_status = 402


class ApprovalRequiredError(TetherError):
    type = "approval_required"
    http_status = 409


class RunKilledError(TetherError):
    type = "run_killed"
    http_status = 409


class NotFoundError(TetherError):
    type = "not_found"
    http_status = 404


class ConflictError(TetherError):
    type = "conflict"
    http_status = 409


class RateLimitedError(TetherError):
    type = "rate_limited"
    http_status = 429


class UpstreamError(TetherError):
    type = "upstream_error"
    http_status = 502


class UpstreamTimeoutError(UpstreamError):
    type = "upstream_timeout"
    http_status = 504


class ConfigError(TetherError):
    type = "config_error"
    http_status = 500


ERROR_TYPES: tuple[type[TetherError], ...] = (
    TetherError,
    BadRequestError,
    PayloadTooLargeError,
    AuthenticationError,
    KeyExpiredError,
    PermissionDeniedError,
    PolicyDeniedError,
    BudgetExceededError,
    ApprovalRequiredError,
    RunKilledError,
    NotFoundError,
    ConflictError,
    RateLimitedError,
    UpstreamError,
    UpstreamTimeoutError,
    ConfigError,
)
