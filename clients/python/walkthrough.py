"""A new user's walk through larder with the generated Python client (openapi-python-client).

clients/check.sh generates `larder_client` from the running server's /openapi.json, puts it
on PYTHONPATH, type-checks this file with mypy --strict and runs it:

    python walkthrough.py BASE_URL ADMIN_EMAIL ADMIN_PASSWORD

Every step asserts the status, the headers that matter and the typed body; the first failed
step ends the run with a traceback.
"""

from __future__ import annotations

import sys
import time
import uuid
from http import HTTPStatus
from typing import TypeVar

from larder_client import AuthenticatedClient, Client
from larder_client.api.auth import token
from larder_client.api.items import (
    create_item,
    delete_item,
    get_item,
    patch_item,
    replace_item,
)
from larder_client.api.jobs import create_job, get_job
from larder_client.api.users import delete_user, get_user, me, register
from larder_client.models import (
    Deleted,
    ImportResult,
    Item,
    ItemInput,
    ItemPatch,
    JobAccepted,
    JobKind,
    JobStatus,
    JobView,
    ProcessInput,
    ProblemBody,
    TokenRequest,
    TokenResponse,
    User,
    UserCreate,
)
from larder_client.types import Response

T = TypeVar("T")
R = TypeVar("R")


def expect(response: Response[R], status: HTTPStatus, kind: type[T]) -> T:
    """The parsed body of a response that must have this status and body type."""
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.content!r}"
    )
    assert isinstance(response.parsed, kind), f"expected a {kind.__name__}: {response.parsed!r}"
    return response.parsed


def log_in(base_url: str, email: str, password: str) -> AuthenticatedClient:
    """The OAuth2 password form, then a client that sends the bearer token."""
    anonymous = Client(base_url=base_url)
    answer = token.sync_detailed(client=anonymous, body=TokenRequest(username=email, password=password))
    granted = expect(answer, HTTPStatus.OK, TokenResponse)
    assert granted.token_type == "bearer"
    assert answer.headers["cache-control"] == "no-store"
    return AuthenticatedClient(base_url=base_url, token=granted.access_token)


def main(base_url: str, admin_email: str, admin_password: str) -> None:
    anonymous = Client(base_url=base_url)

    # Register, log in, see ourselves.
    email = f"py-{uuid.uuid4().hex[:12]}@example.com"
    password = "walk-through-password-1"
    created = register.sync_detailed(
        client=anonymous, body=UserCreate(email=email, password=password, full_name="Python Walker")
    )
    user = expect(created, HTTPStatus.CREATED, User)
    assert created.headers["location"] == f"/users/{user.id}"
    client = log_in(base_url, email, password)
    assert expect(me.sync_detailed(client=client), HTTPStatus.OK, User).email == email

    # Create an item as the README shows it: only name and price.
    answer = create_item.sync_detailed(client=client, body=ItemInput(name="Strawberry jam", price=4.5))
    item = expect(answer, HTTPStatus.CREATED, Item)
    assert item.quantity == 0 and item.owner_id == user.id
    assert answer.headers["location"] == f"/items/{item.id}"
    etag = answer.headers["etag"]

    # A conditional read: the copy we hold is current.
    answer_304 = get_item.sync_detailed(item.id, client=anonymous, if_none_match=etag)
    assert answer_304.status_code == HTTPStatus.NOT_MODIFIED, answer_304
    assert answer_304.headers["etag"] == etag
    fresh = get_item.sync_detailed(item.id, client=anonymous)
    assert expect(fresh, HTTPStatus.OK, Item).name == "Strawberry jam"

    # Conditional writes: the current ETag wins, a stale one is refused with 412.
    replaced = replace_item.sync_detailed(
        item.id, client=client, body=ItemInput(name="Apricot jam", price=5.0, quantity=2), if_match=etag
    )
    assert expect(replaced, HTTPStatus.OK, Item).version == item.version + 1
    new_etag = replaced.headers["etag"]
    assert new_etag != etag
    stale = replace_item.sync_detailed(
        item.id, client=client, body=ItemInput(name="Plum jam", price=1.0), if_match=etag
    )
    assert expect(stale, HTTPStatus.PRECONDITION_FAILED, ProblemBody).status == 412
    patched = patch_item.sync_detailed(item.id, client=client, body=ItemPatch(quantity=7), if_match=new_etag)
    patched_item = expect(patched, HTTPStatus.OK, Item)
    assert patched_item.quantity == 7 and patched_item.name == "Apricot jam"

    # Idempotent creation: the same key twice is one item.
    key = f"py-{uuid.uuid4().hex}"
    first = create_item.sync_detailed(client=client, body=ItemInput(name="Honey", price=8.0), idempotency_key=key)
    again = create_item.sync_detailed(client=client, body=ItemInput(name="Honey", price=8.0), idempotency_key=key)
    assert expect(first, HTTPStatus.CREATED, Item).id == expect(again, HTTPStatus.CREATED, Item).id
    assert first.headers["etag"] == again.headers["etag"]

    # An import job, polled until it ends: two rows created, one (a negative price) rejected.
    # Rows are any JSON (each is validated on its own), so they are plain dicts here.
    rows = [ItemInput(name="Flour", price=1.2).to_dict(), {"name": "Salt", "price": -1}, {"name": "Sugar", "price": 0.9}]
    accepted = create_job.sync_detailed(client=client, body=ProcessInput(kind=JobKind.IMPORT_ITEMS, items=rows))
    job = expect(accepted, HTTPStatus.ACCEPTED, JobAccepted)
    assert accepted.headers["location"] == f"/jobs/{job.job_id}"
    deadline = time.monotonic() + 30
    while True:
        view = expect(get_job.sync_detailed(job.job_id, client=client), HTTPStatus.OK, JobView)
        if view.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            break
        assert time.monotonic() < deadline, f"the job is still {view.status}"
        time.sleep(0.1)
    assert view.status == JobStatus.SUCCEEDED, view.error
    assert view.progress.done == view.progress.total == 3
    result = view.result
    assert isinstance(result, ImportResult), result
    assert result.created_count == 2 and len(result.created) == 2
    assert result.rejected_count == 1 and result.rejected[0].index == 1
    assert result.rejected[0].errors[0].loc == ["price"]

    # Delete an item under If-Match.
    current = get_item.sync_detailed(item.id, client=anonymous)
    expect(current, HTTPStatus.OK, Item)
    gone = delete_item.sync_detailed(item.id, client=client, if_match=current.headers["etag"])
    assert gone.status_code == HTTPStatus.NO_CONTENT, gone
    expect(get_item.sync_detailed(item.id, client=anonymous), HTTPStatus.NOT_FOUND, ProblemBody)

    # An admin deletes the user; their token no longer works.
    admin = log_in(base_url, admin_email, admin_password)
    refused = delete_user.sync_detailed(user.id, client=client)
    expect(refused, HTTPStatus.FORBIDDEN, ProblemBody)
    assert expect(delete_user.sync_detailed(user.id, client=admin), HTTPStatus.OK, Deleted).deleted
    expect(get_user.sync_detailed(user.id, client=admin), HTTPStatus.NOT_FOUND, ProblemBody)
    expect(me.sync_detailed(client=client), HTTPStatus.UNAUTHORIZED, ProblemBody)

    print("python walk-through: ok")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3])
