"""Who may read the metrics port when it is served securely: the API server decides.

As controller-runtime's `filters.WithAuthenticationAndAuthorization`: the caller's bearer
token goes to a TokenReview (who is this?), and the user it names to a SubjectAccessReview
(may this user `get` this non-resource URL path, `/metrics` or `/debug/pprof/heap`?).
The answers:

- 401 without a bearer token, or with one the API server does not authenticate;
- 403 when authenticated but not allowed;
- 500 when the API server cannot answer (nothing is cached then: the next scrape asks again);
- otherwise the request goes through.

So a scraper needs a ClusterRole with `nonResourceURLs: ["/metrics"], verbs: ["get"]`, and
the operator `create` on `tokenreviews` and `subjectaccessreviews`.

Answers are cached briefly, so that a scrape every few seconds costs the API server two
reviews a minute, not two per scrape: token reviews and allowed decisions for
`ALLOW_TTL`, refusals for `DENY_TTL` (shorter, so a new RoleBinding takes effect soon),
at most `MAX_ENTRIES` of each (least recently used dropped first). Tokens are cached by
their SHA-256 digest, never kept themselves. Everything runs on the event loop, so the
caches need no lock; two concurrent first requests with one token may both ask, which
costs one review more and nothing else.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from cachetools import TLRUCache

from virtualservice_operator.kube.client import JSON, ApiError, Kind

TOKEN_REVIEWS = Kind("authentication.k8s.io", "v1", "tokenreviews", "TokenReview")
SUBJECT_ACCESS_REVIEWS = Kind(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview"
)
ALLOW_TTL = 60.0  # controller-runtime: 1 min for tokens, 5 min for allowed decisions
DENY_TTL = 10.0
MAX_ENTRIES = 1024

log = structlog.get_logger("authz")


class ReviewClient(Protocol):
    """What the reviews need of the API client (`KubeClient` is one)."""

    async def create(self, kind: Kind, namespace: str | None, body: JSON) -> JSON: ...


@dataclass(frozen=True)
class User:
    """The user a TokenReview names: what a SubjectAccessReview asks about."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()  # a tuple, so a User is a cache key

    @classmethod
    def from_review(cls, user: JSON) -> User:
        extra = user.get("extra") or {}
        return cls(
            name=str(user.get("username", "")),
            uid=str(user.get("uid", "")),
            groups=tuple(user.get("groups") or ()),
            extra=tuple(sorted((k, tuple(v or ())) for k, v in extra.items())),
        )


@dataclass(frozen=True)
class Decision:
    """What to answer: `status` 200 lets the request through; otherwise `message`."""

    status: int
    message: str = ""
    user: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header (scheme in any case), or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


class ReviewError(Exception):
    """The API server did not answer a review; the request gets a 500."""


_Authn = tuple[User | None, str]  # the user, or None and why not
_Authz = tuple[bool, str]  # allowed, and the API server's reason


class AccessReview:
    """Authenticates and authorizes requests through the API server, with short caches."""

    def __init__(
        self,
        client: ReviewClient,
        *,
        allow_ttl: float = ALLOW_TTL,
        deny_ttl: float = DENY_TTL,
        max_entries: int = MAX_ENTRIES,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client

        def expiry(_key: object, answer: tuple[object, str], now: float) -> float:
            return now + (allow_ttl if answer[0] else deny_ttl)  # a user, or True: allowed

        self._tokens: TLRUCache[bytes, _Authn] = TLRUCache(max_entries, expiry, timer)
        self._decisions: TLRUCache[tuple[User, str, str], _Authz] = TLRUCache(
            max_entries, expiry, timer
        )

    async def check(self, authorization: str | None, method: str, path: str) -> Decision:
        """Whether a request with this Authorization header may `method` the URL `path`."""
        token = bearer_token(authorization)
        if token is None:
            return Decision(401, "Unauthorized: send 'Authorization: Bearer <token>'")
        try:
            user, why = await self.authenticate(token)
            if user is None:
                log.debug("authentication failed", path=path, reason=why)
                return Decision(401, "Unauthorized")
            verb = method.lower()
            allowed, reason = await self.authorize(user, verb, path)
        except ReviewError as e:
            log.error("access review failed", path=path, error=str(e))
            return Decision(500, "Access review failed: see the operator log")
        if not allowed:
            log.debug("authorization denied", user=user.name, path=path, reason=reason)
            return Decision(403, f"Authorization denied for user {user.name}", user.name)
        return Decision(200, user=user.name)

    async def authenticate(self, token: str) -> _Authn:
        key = hashlib.sha256(token.encode()).digest()
        cached = self._tokens.get(key)
        if cached is not None:
            return cached
        status = await self._review(
            TOKEN_REVIEWS,
            {
                "apiVersion": TOKEN_REVIEWS.api_version,
                "kind": "TokenReview",
                "spec": {"token": token},
            },
        )
        answer: _Authn
        if status.get("authenticated"):
            answer = (User.from_review(status.get("user") or {}), "")
        else:
            answer = (None, str(status.get("error") or "token not authenticated"))
        self._tokens[key] = answer
        return answer

    async def authorize(self, user: User, verb: str, path: str) -> _Authz:
        key = (user, verb, path)
        cached = self._decisions.get(key)
        if cached is not None:
            return cached
        spec: JSON = {
            "user": user.name,
            "groups": list(user.groups),
            "nonResourceAttributes": {"path": path, "verb": verb},
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        status = await self._review(
            SUBJECT_ACCESS_REVIEWS,
            {
                "apiVersion": SUBJECT_ACCESS_REVIEWS.api_version,
                "kind": "SubjectAccessReview",
                "spec": spec,
            },
        )
        answer = (
            bool(status.get("allowed")) and not status.get("denied"),
            str(status.get("reason", "")),
        )
        self._decisions[key] = answer
        return answer

    async def _review(self, kind: Kind, body: JSON) -> JSON:
        try:
            answer = await self._client.create(kind, None, body)
        except ApiError as e:
            raise ReviewError(f"{kind.kind}: {e}") from e
        status = answer.get("status")
        return status if isinstance(status, dict) else {}
