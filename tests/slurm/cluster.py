"""A real single-node Slurm for the test suite: munged, slurmctld and slurmd on this machine.

Everything lives in one temporary directory (config, munge key and socket, state, spool,
logs) and on free TCP ports, so it never touches /etc/slurm, /etc/munge or a Slurm that
is already running here. Clients find it through SLURM_CONF (see ``Cluster.env``).

    python tests/slurm/cluster.py start [DIR]   # prints `export SLURM_CONF=...`
    python tests/slurm/cluster.py stop DIR

When ``slurmctld`` is not installed and we are root with apt-get, Debian's
``slurm-wlm`` and ``munge`` are installed first (non-interactive, quiet).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
PARTITION = "cpu"


class ClusterError(RuntimeError):
    pass


def _run(cmd, timeout=60, check=True, env=None, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def have_slurm() -> bool:
    return all(shutil.which(p) or Path("/usr/sbin", p).exists() for p in ("slurmctld", "slurmd", "munged"))


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def skip_reason() -> str | None:
    """Why the Slurm tests cannot run here, or None when they can."""
    if have_slurm() or can_install():
        return None
    return ("Slurm (slurmctld, slurmd, munged) is not installed and we are not root with apt-get "
            "to install it: apt-get install slurm-wlm munge, or run the tests as root")


def install(timeout: float = 900) -> None:
    """apt-get install slurm-wlm munge, when slurmctld is missing (idempotent)."""
    if have_slurm():
        return
    if not can_install():
        raise ClusterError(skip_reason())
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", NEEDRESTART_MODE="a")
    # Keep the packages' services from starting (they would look for /etc/slurm/slurm.conf):
    # the Debian way is a policy-rc.d that denies every start, for the time of the install.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\n# written by tests/slurm/cluster.py during apt-get install\nexit 101\n")
        policy.chmod(0o755)
    try:
        _run(["apt-get", "update", "-qq"], timeout=timeout, env=env)
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
              "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", *PACKAGES],
             timeout=timeout, env=env)
    finally:
        if ours:
            policy.unlink(missing_ok=True)
    if not have_slurm():
        raise ClusterError(f"apt-get installed {' '.join(PACKAGES)} but slurmctld/slurmd/munged are still missing")


def _sbin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if Path("/usr/sbin", name).exists():
        return str(Path("/usr/sbin", name))
    raise ClusterError(f"{name} not found")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_hardware() -> dict:
    """NodeName, CPUs, ... RealMemory as `slurmd -C` reports them for this machine."""
    out = _run([_sbin("slurmd"), "-C"]).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("NodeName=")), None)
    if line is None:
        raise ClusterError(f"slurmd -C printed no NodeName line:\n{out}")
    return dict(kv.split("=", 1) for kv in line.split())


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie of ours is reaped and counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Cluster:
    """One controller and one node on this machine, in ``root`` (a fresh temp dir by default)."""

    def __init__(self, root: str | Path | None = None, cred_expire: int = 5):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="cosmogan-slurm-"))
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.conf = self.root / "slurm.conf"
        self.cred_expire = cred_expire
        self.node = None
        self.cpus = 0

    # -- paths ------------------------------------------------------------------------------

    def path(self, *parts) -> Path:
        return self.root.joinpath(*parts)

    @property
    def env(self) -> dict:
        return self.client_env()

    def client_env(self, base: dict | None = None) -> dict:
        """``base`` (default os.environ) less any Slurm job variables, plus SLURM_CONF pointing
        at this cluster: the environment for its clients (sbatch, squeue, scontrol...)."""
        env = dict(os.environ if base is None else base)
        for var in [v for v in env if v.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))]:
            del env[var]
        env["SLURM_CONF"] = str(self.conf)
        return env

    # -- start / stop -----------------------------------------------------------------------

    def start(self, timeout: float = 60) -> Cluster:
        install()
        try:
            self._start_munge()
            self._write_conf()
            self._start_daemons()
            self.wait_idle(timeout)
        except (ClusterError, OSError, subprocess.SubprocessError) as e:
            logs = self.logs()
            self.stop()
            raise ClusterError(f"the test Slurm in {self.root} did not start: {e}\n{logs}") from None
        except BaseException:  # KeyboardInterrupt: leave no daemons behind
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        key = self.path("munge", "munge.key")
        key.parent.mkdir(mode=0o700, exist_ok=True)
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = self.path("munge", "munge.socket")
        _run([_sbin("munged"), "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
              f"--pid-file={self.path('munge', 'munged.pid')}", f"--log-file={self.path('munged.log')}",
              f"--seed-file={self.path('munge', 'munged.seed')}"], timeout=30)
        deadline = time.monotonic() + 15
        while not self.munge_socket.exists():
            if time.monotonic() > deadline:
                raise ClusterError("munged did not create its socket")
            time.sleep(0.1)

    def _write_conf(self) -> None:
        hw = _node_hardware()
        self.node = hw["NodeName"]
        self.cpus = int(hw["CPUs"])
        node_hw = " ".join(f"{k}={hw[k]}" for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
                                                    "ThreadsPerCore", "RealMemory") if k in hw)
        overrides = ""
        if self.cpus < 2:  # the tests run two tasks: declare two CPUs on a one-CPU machine
            self.cpus = 2
            node_hw = f"CPUs=2 RealMemory={hw.get('RealMemory', 1)}"
            overrides = "SlurmdParameters=config_overrides\n"
        for d in ("state", "spool"):
            self.path(d).mkdir(mode=0o700, exist_ok=True)
        ctld_port, d_port = _free_ports(2)
        user = os.environ.get("USER") or __import__("pwd").getpwuid(os.geteuid()).pw_name
        self.conf.write_text(f"""\
# Generated by tests/slurm/cluster.py: a one-node test cluster in {self.root}
ClusterName=cosmogan-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket},cred_expire={self.cred_expire}
StateSaveLocation={self.path('state')}
SlurmdSpoolDir={self.path('spool')}
SlurmctldPidFile={self.path('slurmctld.pid')}
SlurmdPidFile={self.path('slurmd.pid')}
SlurmctldLogFile={self.path('slurmctld.log')}
SlurmdLogFile={self.path('slurmd.log')}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobRequeue=1
ReturnToService=2
SchedulerType=sched/backfill
# requeued jobs wait cred_expire seconds, then the next scheduling pass starts them: keep both short
SchedulerParameters=bf_interval=1,sched_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
KillWait=10
InactiveLimit=0
SlurmdTimeout=60
SlurmctldTimeout=60
MessageTimeout=20
PlugStackConfig={self.path('plugstack.conf')}
{overrides}NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.node} {node_hw} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        self.path("plugstack.conf").write_text("")

    def _start_daemons(self) -> None:
        env = self.env
        _run([_sbin("slurmctld"), "-f", str(self.conf), "-i"], env=env, timeout=60)
        _run([_sbin("slurmd"), "-f", str(self.conf), "-N", self.node], env=env, timeout=60)

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = _run(["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env, check=False, timeout=20)
            last = proc.stdout + proc.stderr
            if re.search(rf"^{re.escape(self.node)} idle\b", proc.stdout, re.MULTILINE):
                return
            time.sleep(0.5)
        raise ClusterError(f"node {self.node} not idle after {timeout:.0f} s; sinfo said: {last.strip()}")

    def stop(self, timeout: float = 15) -> None:
        """Cancel this cluster's jobs, then stop its slurmd, slurmctld and munged (by their pid files)."""
        if self.path("slurmctld.pid").exists():
            try:
                jobs = _run(["squeue", "-h", "-o", "%i"], env=self.env, check=False, timeout=20).stdout.split()
                if jobs:
                    _run(["scancel", *jobs], env=self.env, check=False, timeout=20)
                    deadline = time.monotonic() + 20
                    while time.monotonic() < deadline and _run(
                            ["squeue", "-h", "-o", "%i"], env=self.env, check=False, timeout=20).stdout.strip():
                        time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        pids = []
        for name in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            try:
                pid = int(self.path(name).read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except (OSError, ValueError, IndexError):
                continue
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def logs(self, tail: int = 40) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            p = self.path(name)
            if p.exists():
                lines = p.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"--- {p} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(out) or f"(no logs in {self.root})"

    # -- jobs -------------------------------------------------------------------------------

    FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                              "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"})

    def wait(self, jobid: int | str, timeout: float = 240, poll: float = 0.25) -> dict:
        """Wait until the job has ended (as `sbatch --wait` does, polling faster); its record.

        A requeued job passes through REQUEUED and PENDING and is waited for until its last run
        ends. On timeout the job is cancelled and ClusterError says where it was."""
        deadline = time.monotonic() + timeout
        info = {}
        while time.monotonic() < deadline:
            info = self.job(jobid)
            if info.get("JobState") in self.FINAL_STATES:
                return info
            time.sleep(poll)
        _run(["scancel", str(jobid)], env=self.env, check=False, timeout=20)
        raise ClusterError(f"job {jobid} still {info.get('JobState', '?')} ({info.get('Reason', '?')}) "
                           f"after {timeout:.0f} s; cancelled.\n{self.logs()}")

    def squeue_state(self, jobid: int | str) -> str:
        """squeue's state of the job (COMPLETING while its processes are ending)."""
        return _run(["squeue", "-h", "-j", str(jobid), "-o", "%T"], env=self.env, check=False, timeout=20).stdout.strip()

    def submit(self, *args, env: dict | None = None, cwd=None) -> int:
        """sbatch --parsable ARGS; the job id (ClusterError with sbatch's message when refused)."""
        proc = _run(["sbatch", "--parsable", *map(str, args)], env=env or self.env, cwd=cwd, check=False,
                    timeout=60)
        if proc.returncode != 0:
            raise ClusterError(f"sbatch {' '.join(map(str, args))} refused ({proc.returncode}): "
                               f"{proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";")[0])


    def job(self, jobid: int | str) -> dict:
        """`scontrol show job -o JOBID` as a dict (empty when Slurm forgot the job)."""
        proc = _run(["scontrol", "show", "job", "-o", str(jobid)], env=self.env, check=False, timeout=20)
        if proc.returncode != 0:
            return {}
        fields = {}
        for m in re.finditer(r"(\w[\w:/]*)=(\S*)", proc.stdout):
            fields.setdefault(m.group(1), m.group(2))
        return fields


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("start", "stop"):
        print(__doc__)
        return 2
    if argv[0] == "start":
        c = Cluster(argv[1] if len(argv) > 1 else None).start()
        print(f"export SLURM_CONF={c.conf}")
    else:
        Cluster(argv[1]).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
