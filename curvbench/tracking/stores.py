"""Checks that a tracking store or a study store can be used, made before anything is logged, and one-line
explanations of the store failures that can still happen later (a lock held too long, a full disk).

Every message names the store (its URL with the password masked) and what was expected."""

from __future__ import annotations

import os
import re
from pathlib import Path

from curvbench.errors import CurvbenchError

SQLITE_HEADER = b"SQLite format 3\x00"
DB_SCHEMES = ("postgresql", "mysql", "mssql")
DRIVERS = {  # scheme -> (module to import, package to install)
    "postgresql": ("psycopg2", "psycopg2-binary"),
    "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
    "postgresql+psycopg": ("psycopg", "psycopg[binary]"),
    "postgresql+pg8000": ("pg8000", "pg8000"),
    "mysql": ("MySQLdb", "mysqlclient"),
    "mysql+mysqldb": ("MySQLdb", "mysqlclient"),
    "mysql+pymysql": ("pymysql", "pymysql"),
    "mssql": ("pyodbc", "pyodbc"),
    "mssql+pyodbc": ("pyodbc", "pyodbc"),
}
PROBE_SECONDS = 5


def mask(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db"""
    return re.sub(r"(//[^/:@]+:)[^@/]*@", r"\1***@", url)


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):].split("?", 1)[0])
    return None


def absolute_sqlite(url: str) -> str:
    """A relative SQLite URL made absolute: it names a file of the working directory at the time of the call,
    not of whichever directory the pool opens its next connection in."""
    path = sqlite_path(url)
    if path is None or path.is_absolute() or str(path) in ("", ".", ":memory:"):
        return url
    query = url.partition("?")[2]
    return f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")


def check_sqlite(path: Path, label: str, url: str, write: bool = True) -> None:
    """The database file of a SQLite store: its folder can exist, it is a file, and it is a SQLite database."""
    shown = mask(url)
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise CurvbenchError(f"{label} {shown}: {parent} is a file, not a folder; move it away or choose "
                                     f"another location")
            break
    if write:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CurvbenchError(f"{label} {shown}: cannot create the folder {path.parent} "
                                 f"({e.strerror or e.__class__.__name__})") from None
    elif not path.exists():
        raise CurvbenchError(f"{label} {shown}: {path} does not exist")
    if path.is_dir():
        raise CurvbenchError(f"{label} {shown}: {path} is a folder, not a SQLite database file")
    if path.exists() and path.stat().st_size > 0:
        try:
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as e:
            raise CurvbenchError(f"{label} {shown}: cannot read {path} ({e.strerror})") from None
        if head != SQLITE_HEADER:
            raise CurvbenchError(f"{label} {shown}: {path} is not a SQLite database (corrupted, truncated or another "
                                 f"kind of file); move it away, or choose another store")
        if path.stat().st_size < 512:
            raise CurvbenchError(f"{label} {shown}: {path} is truncated ({path.stat().st_size} bytes); move it away")
    if write and (not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK))):
        raise CurvbenchError(f"{label} {shown}: {path} is read-only; choose a writable location")


def check_driver(url: str, label: str) -> None:
    """The driver SQLAlchemy will use for this URL is installed. A bare `postgresql://` means whichever driver the
    installed SQLAlchemy defaults to (psycopg 3 from SQLAlchemy 2.1 on, psycopg2 before)."""
    scheme = scheme_of(url)
    if "+" not in scheme and scheme in DB_SCHEMES:
        try:
            import sqlalchemy

            scheme = f"{scheme}+{sqlalchemy.engine.make_url(url).get_dialect().driver}"
        except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot read: the connection check says why
            return
    module, package = DRIVERS.get(scheme, (None, None))
    if module is None:
        return
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        hint = "pip install 'curvbench[distributed]'" if scheme.startswith("postgresql") else f"pip install {package}"
        raise CurvbenchError(f"{label} {mask(url)}: the database driver {module} is not installed; {hint}") from None


def check_database(url: str, label: str) -> None:
    """A database server answers within a few seconds and takes the credentials."""
    check_driver(url, label)
    import sqlalchemy

    args = {"connect_timeout": PROBE_SECONDS} if scheme_of(url).startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except sqlalchemy.exc.ArgumentError as e:
        raise CurvbenchError(f"{label} {mask(url)}: not a database URL ({one_line(e)})") from None
    except ImportError as e:  # a dialect whose driver the table above does not know
        raise CurvbenchError(f"{label} {mask(url)}: the database driver {e.name or one_line(e)} is not installed; "
                             f"install the package that provides it") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise CurvbenchError(f"{label} {mask(url)}: cannot connect ({one_line(getattr(e, 'orig', e))})") from None


def check_server(url: str, label: str) -> None:
    """An MLflow tracking server answers its health check within a few seconds."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=PROBE_SECONDS) as r:
            if r.status != 200:
                raise CurvbenchError(f"{label} {mask(url)}: the server answered {r.status} to its health check")
    except urllib.error.HTTPError as e:
        raise CurvbenchError(f"{label} {mask(url)}: the server answered {e.code} to its health check; "
                             f"is it an MLflow tracking server?") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = getattr(e, "reason", None) or e
        raise CurvbenchError(f"{label} {mask(url)}: cannot reach the MLflow tracking server ({one_line(why)}); "
                             f"is `mlflow server` running there?") from None


def _check_sqlite_url(url: str, label: str, write: bool = True) -> None:
    path = sqlite_path(url)
    if path is None:
        raise CurvbenchError(f"{label} {mask(url)}: expected sqlite:///PATH (three slashes, then the file)")
    check_sqlite(path, label, url, write)


def check_tracking_uri(url: str, write: bool = True) -> None:
    label = "tracking store"
    scheme = scheme_of(url)
    if not scheme and re.match(r"[A-Za-z][\w+.-]*:", url):  # sqlite:/x, http:host: a scheme without //
        raise CurvbenchError(f"{label} {mask(url)}: not a URL; expected sqlite:///PATH, http(s)://HOST:PORT, "
                             f"postgresql://... or a folder")
    if scheme == "sqlite":
        _check_sqlite_url(url, label, write)
    elif scheme in ("http", "https"):
        check_server(url, label)
    elif scheme.split("+")[0] in DB_SCHEMES:
        check_database(url, label)
    elif scheme in ("", "file"):
        folder = Path(url[len("file://"):] if scheme == "file" else url)
        if folder.exists() and not folder.is_dir():
            raise CurvbenchError(f"{label} {mask(url)}: {folder} is a file; a file store is a folder")
    else:
        raise CurvbenchError(f"{label} {mask(url)}: unknown scheme {scheme!r}; expected sqlite:///PATH, "
                             f"http(s)://HOST:PORT, postgresql://..., mysql://... or a folder")


def check_study_storage(url: str) -> None:
    label = "study storage"
    scheme = scheme_of(url)
    if scheme == "sqlite":
        _check_sqlite_url(url, label)
    elif scheme.split("+")[0] in DB_SCHEMES:
        check_database(url, label)
    else:
        raise CurvbenchError(f"--storage {mask(url)}: expected an Optuna RDB storage URL: sqlite:///PATH, "
                             f"postgresql://USER:PASSWORD@HOST/DB or mysql://...")


def one_line(e) -> str:
    text = " ".join(str(e).split())
    text = re.sub(r"\(Background on this error at: \S+\)", "", text)
    text = re.sub(r"\[SQL: .*", "", text).strip()
    return text[:300] or e.__class__.__name__


def explain(e: BaseException, where: str = "") -> str | None:
    """One line for a store or file-system failure that got past the checks; None for anything else."""
    name = e.__class__.__name__
    module = e.__class__.__module__
    at = f"{where}: " if where else ""
    orig = getattr(e, "orig", None)
    text = one_line(orig if orig is not None else e)
    low = text.lower()
    if module.startswith("sqlalchemy") or name in ("OperationalError", "DatabaseError"):
        if "locked" in low:
            return (f"{at}the database is locked by another process (another curvbench, or an MLflow UI writing "
                    f"to it) beyond the retry budget; try again when it is done")
        if "readonly" in low or "read-only" in low:
            return f"{at}the database is read-only ({text})"
        if "full" in low or "disk i/o" in low:
            return f"{at}the disk holding the database failed or is full ({text})"
        if "not a database" in low or "malformed" in low:
            return f"{at}the database is corrupted ({text}); move it away"
        return f"{at}database error: {text}"
    if module.startswith("mlflow"):
        return f"{at}{text}"
    if module.startswith("optuna") or name == "StorageInternalError":
        return f"{at}study storage error: {text}"
    if isinstance(e, OSError):
        target = e.filename or where
        return f"{target}: {e.strerror or text}" if target else text
    return None
