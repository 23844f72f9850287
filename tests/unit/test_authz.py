"""The access check of the secure metrics port, against a scripted API server: which
review is sent, what each answer becomes, and how long answers are cached."""

from __future__ import annotations

import string
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtualservice_operator.kube.client import JSON, Kind, ServerError
from virtualservice_operator.serving.authz import (
    ALLOW_TTL,
    DENY_TTL,
    AccessReview,
    User,
    bearer_token,
)

_TOKEN_CHARS = string.ascii_letters + string.digits + "-._~+/="


@given(st.text(_TOKEN_CHARS, min_size=1), st.sampled_from(["Bearer", "bearer", "BEARER"]))
def test_bearer_token_is_read_whatever_the_scheme_case(token: str, scheme: str) -> None:
    assert bearer_token(f"{scheme} {token}") == token
    assert bearer_token(f"  {scheme}   {token}  ") == token


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Token abc", "Bearer a b"]
)
def test_no_bearer_token(header: str | None) -> None:
    assert bearer_token(header) is None


@dataclass
class FakeApiServer:
    """Answers reviews: `tokens` maps a token to its user; `allowed` holds (user, path)."""

    tokens: dict[str, JSON] = field(default_factory=dict)
    allowed: set[tuple[str, str]] = field(default_factory=set)
    fail: bool = False
    sent: list[JSON] = field(default_factory=list)

    async def create(self, kind: Kind, namespace: str | None, body: JSON) -> JSON:
        assert namespace is None  # both reviews are cluster-scoped
        self.sent.append(body)
        if self.fail:
            raise ServerError(503, "ServiceUnavailable", "etcd is down")
        spec = body["spec"]
        if kind.plural == "tokenreviews":
            user = self.tokens.get(spec["token"])
            status = {"authenticated": True, "user": user} if user else {"error": "invalid"}
        else:
            path = spec["nonResourceAttributes"]["path"]
            status = {"allowed": (spec["user"], path) in self.allowed, "reason": "RBAC"}
        return {**body, "status": status}

    def kinds(self) -> list[str]:
        return [str(body["kind"]) for body in self.sent]


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


PROMETHEUS = {
    "username": "system:serviceaccount:monitoring:prometheus",
    "uid": "u-1",
    "groups": ["system:serviceaccounts", "system:authenticated"],
    "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"]},
}


def _review(server: FakeApiServer, clock: Clock, **kwargs: int) -> AccessReview:
    return AccessReview(server, timer=clock, **kwargs)  # type: ignore[arg-type]


async def test_without_a_token_401_and_no_review() -> None:
    server = FakeApiServer()
    decision = await _review(server, Clock()).check(None, "GET", "/metrics")
    assert (decision.status, decision.allowed) == (401, False)
    assert "Bearer" in decision.message
    assert server.sent == []


async def test_a_token_the_api_server_rejects_is_401_and_remembered_briefly() -> None:
    server, clock = FakeApiServer(), Clock()
    review = _review(server, clock)
    assert (await review.check("Bearer forged", "GET", "/metrics")).status == 401
    assert (await review.check("Bearer forged", "GET", "/metrics")).status == 401
    assert server.kinds() == ["TokenReview"]  # the second answer came from the cache
    assert server.sent[0]["spec"] == {"token": "forged"}
    clock.now += DENY_TTL + 0.1
    assert (await review.check("Bearer forged", "GET", "/metrics")).status == 401
    assert server.kinds() == ["TokenReview", "TokenReview"]


async def test_authenticated_but_not_allowed_is_403_naming_the_user() -> None:
    server = FakeApiServer(tokens={"t": PROMETHEUS})
    decision = await _review(server, Clock()).check("Bearer t", "GET", "/metrics")
    assert decision.status == 403
    assert decision.message == f"Authorization denied for user {PROMETHEUS['username']}"
    sar = server.sent[1]
    assert (sar["apiVersion"], sar["kind"]) == ("authorization.k8s.io/v1", "SubjectAccessReview")
    # The whole identity travels, as the API server's own delegated authorizer sends it.
    assert sar["spec"] == {
        "user": PROMETHEUS["username"],
        "uid": "u-1",
        "groups": PROMETHEUS["groups"],
        "extra": PROMETHEUS["extra"],
        "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
    }


async def test_allowed_is_200_and_repeated_scrapes_cost_no_reviews_until_the_ttl() -> None:
    user = PROMETHEUS["username"]
    server, clock = FakeApiServer(tokens={"t": PROMETHEUS}, allowed={(user, "/metrics")}), Clock()
    review = _review(server, clock)
    for _ in range(5):
        decision = await review.check("Bearer t", "GET", "/metrics")
        assert (decision.status, decision.user) == (200, user)
    assert server.kinds() == ["TokenReview", "SubjectAccessReview"]
    clock.now += ALLOW_TTL + 0.1
    assert (await review.check("Bearer t", "GET", "/metrics")).allowed
    assert len(server.sent) == 4


async def test_each_path_is_authorized_on_its_own() -> None:
    user = PROMETHEUS["username"]
    server = FakeApiServer(tokens={"t": PROMETHEUS}, allowed={(user, "/metrics")})
    review = _review(server, Clock())
    assert (await review.check("Bearer t", "GET", "/metrics")).status == 200
    assert (await review.check("Bearer t", "GET", "/debug/pprof/heap")).status == 403
    assert server.sent[-1]["spec"]["nonResourceAttributes"] == {
        "path": "/debug/pprof/heap",
        "verb": "get",
    }
    assert server.kinds() == ["TokenReview", "SubjectAccessReview", "SubjectAccessReview"]


async def test_an_api_server_failure_is_500_and_not_cached() -> None:
    server = FakeApiServer(tokens={"t": PROMETHEUS}, fail=True)
    review = _review(server, Clock())
    decision = await review.check("Bearer t", "GET", "/metrics")
    assert decision.status == 500
    assert "etcd" not in decision.message  # details go to the log, not to the caller
    server.fail = False
    assert (await review.check("Bearer t", "GET", "/metrics")).status == 403
    assert server.kinds() == ["TokenReview", "TokenReview", "SubjectAccessReview"]


async def test_the_caches_are_bounded() -> None:
    server = FakeApiServer(tokens={f"t{i}": PROMETHEUS for i in range(3)})
    review = _review(server, Clock(), max_entries=2)
    for token in ("t0", "t1", "t2", "t0"):
        await review.authenticate(token)
    assert server.kinds().count("TokenReview") == 4  # t0 was dropped to make room for t2


def test_user_from_a_review_is_hashable_and_keeps_everything() -> None:
    user = User.from_review(PROMETHEUS)
    assert hash(user) == hash(User.from_review(dict(PROMETHEUS)))
    assert user.groups == ("system:serviceaccounts", "system:authenticated")
    assert user.extra == (("authentication.kubernetes.io/pod-name", ("prometheus-0",)),)
