"""An Iceberg catalog (pyiceberg's SQL or REST catalog) opened from its properties, and its failures named.

A catalog's properties hold credentials: the SQLAlchemy URL's password (RFC 3986 userinfo), a REST catalog's
``token`` or ``credential``, a key in a query string. A catalog that cannot be opened or reached is an error that
names the catalog (its name and type) and gives the driver's reason scrubbed of every one of them, never chained to
the driver's own exception, whose text may carry the URI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ai_assets.runtime.errors import AIAssetsError, ConfigError, MissingExtraError
from ai_assets.runtime.scrub import scrub_and_cut


class CatalogError(AIAssetsError):
    """The catalog could not be opened or reached: the message names the catalog, never its URI or credentials."""


SECRET_PROPERTY = re.compile(r"token|credential|password|secret|key", re.IGNORECASE)


def _secrets(properties: Mapping[str, Any]) -> list[str]:
    """What in a catalog's properties is a credential: the URI's userinfo (RFC 3986) and query values, and every
    property named like a token, credential, password, secret or key (the host, port and path stay readable)."""
    uri = str(properties.get("uri", ""))
    found: list[str] = []
    if (userinfo := re.search(r"//([^/?#]*)@", uri)) is not None:
        found += [userinfo.group(1), *userinfo.group(1).split(":", 1)]
    found += [value for _, _, value in re.findall(r"[?&]([^=&#]*)(=)([^&#]*)", uri)]
    found += [str(v) for k, v in properties.items() if SECRET_PROPERTY.search(str(k))]
    return [f for f in found if f]


def unreachable(exc: BaseException) -> bool:
    """A catalog that refused, timed out or dropped the connection (SQLAlchemy's ``OperationalError`` /
    ``InterfaceError``, requests' ``ConnectionError`` / ``Timeout``), not an error in the data or the table."""
    kinds = {f"{type(k).__module__.split('.')[0]}.{k.__name__}" for k in type(exc).__mro__}
    return bool(kinds & {"sqlalchemy.OperationalError", "sqlalchemy.InterfaceError", "requests.ConnectionError",
                         "requests.Timeout"})


def catalog_failure(name: str, properties: Mapping[str, Any], exc: BaseException, doing: str) -> CatalogError:
    """``exc`` as an error naming the catalog, its reason scrubbed of the catalog's credentials (never chained:
    the original text may carry the URI)."""
    reason = scrub_and_cut(f"{type(exc).__name__}: {exc}", _secrets(properties), 300)
    return CatalogError(f"Iceberg catalog {name!r} ({properties.get('type', 'sql')}): {doing}: {reason}")


def open_catalog(catalog: Any, name: str = "ai_assets") -> Any:
    """A pyiceberg catalog: one given as is, or built from properties (``{"type": "sql", "uri":
    "sqlite:///catalog.db", "warehouse": "file:///lake"}``; ``{"type": "rest", "uri": "https://..."}``)."""
    try:
        from pyiceberg.catalog import load_catalog
    except ImportError as exc:
        raise MissingExtraError("pyiceberg", "iceberg") from exc
    if not isinstance(catalog, Mapping):
        return catalog
    if "uri" not in catalog:
        raise ConfigError(f"Iceberg catalog {name!r}: give its 'uri' (a SQLAlchemy URL or a REST catalog URL)")
    uri = str(catalog["uri"])
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:///:memory:"):  # SQLite creates no folders
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return load_catalog(name, **{str(k): str(v) for k, v in catalog.items()})
    except AIAssetsError:
        raise
    except Exception as exc:  # a driver's text may echo the URI and its password: named and scrubbed, not chained
        failure = catalog_failure(name, catalog, exc, "cannot open it (is it running, is its 'uri' right?)")
    raise failure
