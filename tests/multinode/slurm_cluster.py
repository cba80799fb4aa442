"""A one-host SLURM cluster for tests: munged, slurmctld and slurmd as root, all state in one folder.

Debian's ``slurm-wlm`` and ``munge`` packages; no accounting, no cgroups. Clients find it through the
``SLURM_CONF`` in the environment that ``one_host_cluster`` yields."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .launchers import free_port

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")


def unavailable() -> str | None:
    """Why this machine cannot run the cluster, or None."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return "slurmd must run as root"
    return None


def _conf(root: Path, cpus: int) -> str:
    host = platform.node()
    return f"""ClusterName=palsgd-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/socket
CredType=cred/munge
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/linear
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@contextmanager
def one_host_cluster(root: Path, cpus: int = 2) -> Iterator[dict]:
    """Start the cluster under ``root``; yield the environment for sbatch/srun; stop every daemon after."""
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(mode=0o700, parents=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, cpus))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pid_files = [root / "munge" / "munged.pid", root / "slurmctld.pid", root / "slurmd.pid"]
    try:
        m = root / "munge"
        subprocess.run([_sbin("munged"), "--force", f"--key-file={key}", f"--socket={m}/socket",
                        f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/seed"],
                       check=True)
        subprocess.run([_sbin("slurmctld"), "-f", str(conf)], check=True, env=env)
        subprocess.run([_sbin("slurmd"), "-f", str(conf)], check=True, env=env)
        _wait_idle(env, root)
        yield env
    finally:
        for pid_file in reversed(pid_files):
            _stop(pid_file)


def _wait_idle(env: dict, root: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
        if state.strip() == "idle":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the node never became idle; see {root}/slurmctld.log and {root}/slurmd.log")


def _stop(pid_file: Path, grace_s: float = 10) -> None:
    """SIGTERM the daemon this test started (its pid file), and wait for it to go."""
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
