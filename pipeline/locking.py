"""One writer per output: a lock file that names its holder, and stale locks detected.

Every stage that writes into an output (a run directory, a dataset, a stats table, a
report) holds ``.<name>.lock`` beside it (so taking the lock creates nothing inside the
output, which may not exist yet) while it writes. The file is written whole under a name of
its own and hard-linked into place (atomic, also on NFS and Lustre, and the lock is
never seen empty), and holds the holder's host, pid, process start time and command. A second writer is refused with one line naming the holder. A
lock whose holder is gone is stale: on the same host that is checked (the pid is not
running, or is running a later process), and the lock is taken over; from another host
it cannot be checked, and the line says how to remove it by hand.

Under MPI, rank 0 takes the lock and every rank learns the outcome, so all refuse alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from pipeline.errors import PipelineError, os_error_text


class LockedError(PipelineError):
    """Another process is writing into the same output."""


def lock_path(output: str | Path) -> Path:
    output = Path(output).absolute()
    return output.with_name(f".{output.name}.lock")


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), which tells a reused pid apart."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}


def _alive(holder: dict) -> bool | None:
    """True / False for a holder on this host; None when it is on another one."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # running, as another user
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped
        return False
    start = _start_time(pid)
    return start is None or holder.get("start") in (None, start)


def acquire(output: str | Path, what: str) -> Path:
    """Take the lock of ``output`` (a file or directory path) or raise LockedError naming its holder."""
    path = lock_path(output)
    mine = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.new")
    try:
        mine.write_text(json.dumps(_me()))
    except OSError as e:
        raise LockedError(f"{path.parent}: cannot create the lock there ({os_error_text(e)})") from None
    try:
        for _ in range(3):  # a stale lock taken over, or a race with another taker: try again
            try:
                os.link(mine, path)  # atomic, and the lock is never seen without its holder
                return path
            except FileExistsError:
                pass
            try:
                holder = json.loads(path.read_text() or "{}")
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError):
                holder = {}
            alive = _alive(holder) if holder else False  # unreadable: no holder to wait for
            if alive is False:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')} "
                   f"({holder.get('command', '?')})")
            hint = "" if alive else f"; if that process is gone, remove {path}"
            raise LockedError(f"{output}: another {what} is writing here: {who}{hint}")
        raise LockedError(f"{path}: could not take the lock (it changed hands repeatedly)")
    except OSError as e:
        raise LockedError(f"{path}: cannot create the lock ({os_error_text(e)})") from None
    finally:
        with contextlib.suppress(OSError):
            mine.unlink()


def release(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def output_lock(output: str | Path, what: str, is_main: bool = True,
                agree: Callable[[object], object] = lambda problem: problem) -> Iterator[None]:
    """Hold the lock of ``output`` for the block. The main process takes it; ``agree`` hands
    its outcome to every process (an MPI broadcast from rank 0), so all raise alike."""
    held, problem = None, None
    if is_main:
        try:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            held = acquire(output, what)
        except LockedError as e:
            problem = str(e)
        except OSError as e:
            problem = f"{Path(output).parent}: cannot create the output's directory ({os_error_text(e)})"
    problem = agree(problem)
    if problem:
        raise LockedError(problem)
    try:
        yield
    finally:
        if held is not None:
            release(held)
