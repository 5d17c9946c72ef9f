"""A real PostgreSQL server for the tests: Debian's `postgresql` (initdb, pg_ctl), started once
per test session in a temporary folder, listening on 127.0.0.1 on a free port (its unix socket in
that folder too, never /var/run), with a password-authenticated role and a database; stopped
and removed at the end.

PostgreSQL refuses to run as root. Run as root (a container, CI), the server runs as the
`postgres` user that Debian's package makes (`runuser -u postgres --`); where that user is
missing, an `lrbs-postgres` system user is made for it. Where PostgreSQL is not installed
(`apt-get install postgresql`, or `make test` as root) or cannot start, `why_not()` says why and
the tests that need it skip loudly (see tests/conftest.py)."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROLE, DATABASE = "lrbs", "lrbs"


def find_bin(name: str) -> str | None:
    """A PostgreSQL program: in $LRBS_PG_BIN if set (a folder; another install), else on PATH,
    else the newest of Debian's /usr/lib/postgresql/*/bin."""
    if os.environ.get("LRBS_PG_BIN"):
        path = Path(os.environ["LRBS_PG_BIN"]) / name
        return str(path) if path.exists() else None
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()],
    )
    return versions[-1] if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """Who runs the server: None (this user) unless root; then `postgres`, made if absent."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "lrbs-postgres"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise RuntimeError("running as root, with no postgres user and no useradd to make one")
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "lrbs-postgres"],
        check=True,
        capture_output=True,
    )
    return "lrbs-postgres"


class PgServer:
    """One PostgreSQL cluster in a temporary folder. `url()` is what lrbs's --storage takes."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise RuntimeError(
                "PostgreSQL's initdb/pg_ctl not found (LRBS_PG_BIN, PATH, /usr/lib/postgresql): "
                "`apt-get install -y postgresql` (or `make test` as root) to run these tests"
            )
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="lrbs-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(8)
        self.superpass = "su-" + secrets.token_hex(8)

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        done = subprocess.run(
            [*prefix, *cmd], capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{Path(cmd[0]).name} failed: " + " | ".join(tail))
        return done

    def init(self) -> None:
        pwfile = self.root / "superuser.pw"
        pwfile.write_text(self.superpass + "\n")
        if self.user:
            u = pwd.getpwnam(self.user)
            for p in (self.root, pwfile):
                os.chown(p, u.pw_uid, u.pw_gid)
        os.chmod(self.root, 0o700)
        self._run(
            self.initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        )
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# lrbs tests: 127.0.0.1 only, the socket here; fast, not durable"
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}"
                f"\nunix_socket_directories = '{self.root}'\nmax_connections = 100"
                "\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off"
                "\nshared_buffers = 32MB\n"
            )
        self.start()
        self._make_role()

    def start(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def _make_role(self) -> None:
        import psycopg

        su = f"host=127.0.0.1 port={self.port} user=postgres password={self.superpass}"
        with psycopg.connect(su + " dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")
            c.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def url(self, password: str | None = None, database: str = DATABASE) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{ROLE}:{pw}@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> tuple[PgServer | None, str | None]:
    """(a running server, None), or (None, why it could not be had)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "the psycopg driver is not installed (it is in requirements.txt)"
    server = None
    try:
        server = PgServer()
        server.init()
        return server, None
    except Exception as exc:  # any reason at all: the tests skip, loudly, with it
        if server is not None:
            log = server.log.read_text()[-500:] if server.log.exists() else ""
            server.close()
            return None, f"PostgreSQL could not be started: {exc} {log}".strip()
        return None, str(exc)


# ------------------------------------------------------------------ the pytest side


SKIPPED: list[str] = []


@pytest.fixture(scope="session")
def pg():
    """The session's PostgreSQL server (started on first use), or a loud skip."""
    server, why = start_server()
    if server is None:
        SKIPPED.append(why)
        print(f"\n*** POSTGRESQL TESTS SKIPPED: {why} ***\n", file=sys.stderr)
        pytest.skip(f"POSTGRESQL TESTS SKIPPED: {why}")
    try:
        yield server
    finally:
        server.close()


def pytest_terminal_summary(terminalreporter):
    """Repeated at the end of the run, where it is seen: these tests did not run. The reasons
    are read from the skipped reports too, since with pytest-xdist the skip happens in a
    worker process, not in the one that writes this summary."""
    reasons = list(SKIPPED)
    for report in terminalreporter.stats.get("skipped", []):
        text = str(getattr(report, "longrepr", ""))
        if "POSTGRESQL TESTS SKIPPED: " in text:
            reasons.append(text.split("POSTGRESQL TESTS SKIPPED: ", 1)[1].rstrip("')\""))
    for why in reasons[:1]:
        terminalreporter.write_sep("*", f"POSTGRESQL TESTS SKIPPED: {why}", red=True, bold=True)
