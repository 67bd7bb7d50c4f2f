"""Secrets every role of one metadata database shares (the roles' call token, the payload key), made
by whichever role asks first."""

from __future__ import annotations

import secrets

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aisf.services.common.db.tables import ServiceSecretRow


def shared_secret(engine: Engine, name: str) -> str:
    """The secret `name` (32 random bytes, URL-safe base64); two roles asking at once get the same."""
    with Session(engine) as session:
        found = session.get(ServiceSecretRow, name)
        if found is not None:
            return found.value
    try:
        with Session(engine) as session, session.begin():
            session.add(ServiceSecretRow(name=name, value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another role made it first: theirs it is
    with Session(engine) as session:
        row = session.get(ServiceSecretRow, name)
        assert row is not None
        return row.value
