"""Statuses and HTTP codes, both ways."""

from __future__ import annotations

from blazerpc import Status
from blazerpc.errors import status_for_http


def test_every_status_maps_to_an_http_code_and_back_where_the_code_is_its_own() -> None:
    assert Status.UNAUTHENTICATED.http_status == 401 and Status.PERMISSION_DENIED.http_status == 403
    for status in (Status.UNAUTHENTICATED, Status.NOT_FOUND, Status.RESOURCE_EXHAUSTED, Status.UNAVAILABLE):
        assert status_for_http(status.http_status) is status


def test_codes_only_http_uses_get_the_status_they_stand_for() -> None:
    assert [status_for_http(code) for code in (200, 204, 304)] == [Status.OK] * 3
    assert status_for_http(400) is Status.INVALID_ARGUMENT and status_for_http(422) is Status.INVALID_ARGUMENT
    assert status_for_http(408) is Status.DEADLINE_EXCEEDED and status_for_http(413) is Status.RESOURCE_EXHAUSTED
    assert status_for_http(499) is Status.CANCELLED and status_for_http(500) is Status.INTERNAL
    assert status_for_http(418) is Status.FAILED_PRECONDITION and status_for_http(502) is Status.INTERNAL
