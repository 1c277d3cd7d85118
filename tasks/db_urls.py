"""Database URLs in settings: `${VAR}` placeholders for passwords, redaction, and the drivers sluice installs.

A URL in a config file or a service setting names its password (`postgresql://sluice:${PGPASSWORD}@db/mlflow`)
and never holds it: settings end up in plain text in MLflow params and Prefect records. `expand_url`
fills the placeholders from the environment at the moment of connecting; `redact_url` masks a password
in anything shown. Kept free of heavy imports: the CLI reads these settings on every start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class UrlError(ValueError):
    """A URL setting is unusable (a missing variable, a literal password); the message says what to set."""


def expand_url(template: str, *, where: str, environ: Mapping[str, str] | None = None) -> str:
    """`template` with each `${VAR}` replaced by that environment variable, URL-quoted.

    Raises:
        UrlError: a variable is not set.
    """
    env = os.environ if environ is None else environ

    def _value(match: re.Match[str]) -> str:
        name = match.group(1)
        value = env.get(name)
        if value is None or value == "":
            raise UrlError(
                f"{where} refers to ${{{name}}}, which is not set; export {name}=… in the environment of sluice "
                "(and of the Prefect worker that runs deployments)."
            )
        return quote(value, safe="")

    return PLACEHOLDER.sub(_value, template)


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for messages and records."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_no_password(template: str, *, where: str) -> None:
    """Refuse a URL that holds a password itself: settings are logged, so the URL may only name one.

    Raises:
        UrlError: the URL's password is a literal, not a `${VAR}`.
    """
    password = urlsplit(template).password
    if password and not PLACEHOLDER.fullmatch(password):
        raise UrlError(
            f"{where} holds a password; settings are recorded in plain text, so name it instead: "
            "`postgresql://user:${DB_PASSWORD}@host:5432/db` with DB_PASSWORD in the environment "
            "(for source.sql, password_env or password_secret work too)."
        )


def with_password(url: str, password: str) -> str:
    """The URL with `password` set for its user (quoted as a URL needs)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{quote(password, safe='')}@{host}"))


def driver_url(url: str, driver: str) -> str:
    """A PostgreSQL URL with the driver sluice installs (`postgresql://` → `postgresql+<driver>://`)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return f"postgresql+{driver}://" + url.removeprefix(scheme)
    return url


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://", "postgresql+"))
