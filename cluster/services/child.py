"""What every supervised server process shares: `with` support, kill, and forgetting the child."""

from __future__ import annotations

import subprocess
from types import TracebackType
from typing import IO, Self

from cluster.services.ports import kill_group


class ChildServer:
    """Base of the PostgreSQL, Redis and nginx supervisors."""

    _proc: subprocess.Popen[bytes] | None = None
    _output: IO[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        raise NotImplementedError

    def is_running(self) -> bool:
        """True while the process we started has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the server's main process while running (tests inspect or signal it)."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the whole process group (children included), like a crash."""
        if self._proc is not None:
            kill_group(self._proc)
        self._release()

    def _release(self) -> None:
        """Forget the reaped process and close its output file."""
        self._proc = None
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
