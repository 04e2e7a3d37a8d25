"""Connections that survive real deployments: fork, dead sockets, silent servers, odd hosts.

* **Time bounds.** One number, ``Settings.timeout`` (seconds; the app's default is short, the
  command line's longer), bounds every database call: the connect, each statement and lock wait
  on the server (PostgreSQL ``statement_timeout``/``lock_timeout``; MariaDB
  ``max_statement_time``/``innodb_lock_wait_timeout``/``lock_wait_timeout``; SQLite's busy
  timeout), and each wait for the server's answer on the client (``READ_MARGIN`` more, so the
  server's own, clearer error normally comes first): a server that stops answering without
  closing the socket costs that long, not forever. psycopg has no read timeout of its own, so
  its connections are :func:`bounded_pg_class`, whose every wait for the server has one;
  PyMySQL's are ``read_timeout``/``write_timeout``.
* **The host's own settings.** Each new connection sets what results depend on (PostgreSQL
  ``TimeZone``, ``DateStyle``, ``IntervalStyle``; MariaDB ``time_zone``), whatever the database
  or role was configured to.
* **Dead connections.** A cached connection the server has closed (idle timeout, restart,
  failover) has a readable socket before we send anything (EOF or the server's goodbye):
  :func:`alive` sees that without a round trip, and the pool and the per-request stack drop it.
* **Fork.** A connection made before ``fork`` must never be used by the child (one socket,
  two processes: answers read by the wrong one). Connections remember the pid that made them;
  :func:`after_fork` callbacks run in every child (``os.register_at_fork``).
"""

from __future__ import annotations

import os
import select
import weakref
from typing import Any

APP_TIMEOUT = 5.0  # seconds: a request should fail fast rather than hold a worker
CLI_TIMEOUT = 60.0  # seconds: cron and operators can wait longer for a big table
READ_MARGIN = 2.0  # seconds the client waits beyond the server-side bound

_children: weakref.WeakSet[Any] = weakref.WeakSet()  # objects with an _after_fork() method
_registered = False


def on_fork(obj: Any) -> None:
    """Call ``obj._after_fork()`` in every child process forked from now on (held weakly)."""
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_run_after_fork)
        _registered = True
    _children.add(obj)


def _run_after_fork() -> None:
    for obj in list(_children):
        try:
            obj._after_fork()
        except Exception:  # noqa: BLE001 - a child must start whatever a store's state
            pass


# Connections inherited from a parent process: kept referenced and never closed, since
# closing would say goodbye to the server on the socket the parent still uses.
_INHERITED: list[Any] = []


def abandon(conns: Any) -> None:
    _INHERITED.extend(conns)


def alive(dbapi_conn: Any) -> bool:
    """False if the server has closed this idle connection (or sent something unasked).

    An idle connection's socket has nothing to read; EOF, or the server's goodbye
    (PostgreSQL's FATAL on ``idle_session_timeout`` or shutdown), makes it readable.
    """
    fd = _fileno(dbapi_conn)
    if fd is None:
        return True  # SQLite: no socket
    if fd < 0:
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def _fileno(dbapi_conn: Any) -> int | None:
    if hasattr(dbapi_conn, "pgconn"):  # psycopg 3
        if dbapi_conn.closed:
            return -1
        try:
            return dbapi_conn.fileno()
        except Exception:  # noqa: BLE001
            return -1
    if hasattr(dbapi_conn, "_sock") and hasattr(dbapi_conn, "ping"):  # PyMySQL
        sock = dbapi_conn._sock
        return -1 if sock is None else sock.fileno()
    return None


# -- PostgreSQL: every wait for the server has a bound -----------------------------------------------

_pg_class: Any = None


def bounded_pg_class() -> Any:
    """A psycopg Connection whose waits for the server end after ``sessctl_bound`` seconds.

    On expiry the connection is closed (its state mid-statement is unknown) and the call
    raises OperationalError; the pool sees a closed connection and drops it.
    """
    global _pg_class
    if _pg_class is not None:
        return _pg_class
    import inspect

    import psycopg
    from psycopg import errors

    wait_timeout = getattr(errors, "_WaitTimeout", None)
    if wait_timeout is None or "timeout" not in inspect.signature(psycopg.Connection.wait).parameters:
        _pg_class = psycopg.Connection  # psycopg < 3.2: the server-side bounds only
        return _pg_class

    class BoundedConnection(psycopg.Connection):
        sessctl_bound: float | None = None

        def wait(self, gen, interval=0.1, timeout=None):  # noqa: ANN001
            bound = self.sessctl_bound
            if bound is None or timeout is not None:
                return super().wait(gen, interval, timeout)
            try:
                return super().wait(gen, interval, bound)
            except wait_timeout:
                self.pgconn.finish()  # not close(): the executing cursor holds the connection's lock
                raise psycopg.OperationalError(
                    f"the database did not answer within {bound:g} s (timeout)"
                ) from None

    _pg_class = BoundedConnection
    return _pg_class


def set_bound(dbapi_conn: Any, seconds: float | None) -> None:
    """Change how long this connection's client waits for the server (None: no bound)."""
    if hasattr(dbapi_conn, "sessctl_bound"):
        dbapi_conn.sessctl_bound = seconds
    elif hasattr(dbapi_conn, "_read_timeout") and hasattr(dbapi_conn, "ping"):  # PyMySQL
        dbapi_conn._read_timeout = seconds
        dbapi_conn._write_timeout = seconds
        if dbapi_conn._sock is not None:
            dbapi_conn._sock.settimeout(seconds)


def session_statements(backend: str, timeout: float, server_info: str = "") -> list[str]:
    """What each new connection runs: the host's settings neutralised, the server-side bounds."""
    ms = max(1, int(timeout * 1000))
    if backend == "postgresql":
        return [
            "SET TimeZone = 'UTC'",
            "SET DateStyle = 'ISO, YMD'",
            "SET IntervalStyle = 'postgres'",
            f"SET statement_timeout = {ms}",
            f"SET lock_timeout = {ms}",
        ]
    if backend in ("mysql", "mariadb"):
        secs = max(1, int(round(timeout)))
        sets = ["time_zone = '+00:00'", f"innodb_lock_wait_timeout = {secs}", f"lock_wait_timeout = {secs}"]
        if "mariadb" in server_info.lower():
            sets.append(f"max_statement_time = {timeout:g}")
        else:
            sets.append(f"max_execution_time = {ms}")  # MySQL: SELECTs only
        return ["SET SESSION " + ", ".join(sets)]
    return []


def connect_args(backend: str, timeout: float) -> dict[str, Any]:
    """Driver arguments for the connect bound and the client-side read bound."""
    connect = max(1, int(round(timeout)))
    if backend == "postgresql":
        return {
            "connect_timeout": connect,
            # A host that vanished (no FIN, no RST): the kernel gives up on unacknowledged data.
            "tcp_user_timeout": int((timeout + READ_MARGIN) * 1000),
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 5, "keepalives_count": 3,
        }
    if backend in ("mysql", "mariadb"):
        read = timeout + READ_MARGIN
        return {"connect_timeout": connect, "read_timeout": read, "write_timeout": read}
    if backend == "sqlite":
        return {"timeout": timeout}
    return {}


def driver_connect(dialect: Any, cargs: Any, cparams: Any) -> Any:
    """The driver's connect; on PostgreSQL, a connection whose every wait has a bound."""
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        return bounded_pg_class().connect(*cargs, **cparams)
    return dialect.loaded_dbapi.connect(*cargs, **cparams)


def install(engine: Any, backend: str, timeout: float) -> None:
    """Bounds, host settings, fork safety and dead-connection checks on every connection of ``engine``."""
    from sqlalchemy import event
    from sqlalchemy import exc as sa_exc

    read_bound = timeout + READ_MARGIN
    statements: dict[str, list[str]] = {}

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, record):  # noqa: ANN001
        record.info["pid"] = os.getpid()
        if hasattr(dbapi_conn, "sessctl_bound"):
            dbapi_conn.sessctl_bound = read_bound
        if backend not in ("postgresql", "mysql", "mariadb"):
            return
        if backend not in statements:
            info = dbapi_conn.get_server_info() if hasattr(dbapi_conn, "get_server_info") else ""
            statements[backend] = session_statements(backend, timeout, info)
        cur = dbapi_conn.cursor()
        try:
            cur.execute("; ".join(statements[backend]) if backend == "postgresql" else statements[backend][0])
        finally:
            cur.close()
        dbapi_conn.commit()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, proxy):  # noqa: ANN001
        pid = record.info.get("pid")
        if pid is not None and pid != os.getpid():
            # Made by the parent process: never touch it (not even to close it).
            abandon([dbapi_conn])
            record.dbapi_connection = proxy.dbapi_connection = None
            raise sa_exc.DisconnectionError(f"connection made by process {pid}, not this one")
        if not alive(dbapi_conn):
            raise sa_exc.DisconnectionError("the server closed this connection while it was idle")
