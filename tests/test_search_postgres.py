"""Two `strop search` workers sharing one study in a real PostgreSQL server, started here as a throwaway
cluster (Debian's postgresql package: initdb and pg_ctl; .ci/run installs it). Skipped, saying why, only
where PostgreSQL or its Python driver is not installed."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed: pip install \"strop[search]\"")

from test_search import search_config  # noqa: E402

pytestmark = pytest.mark.slow  # a database server and six fits in two workers: a minute or two


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """postgresql://strop@127.0.0.1:PORT/postgres of a server that lives for this module's tests."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql); the shared-study test "
                    "needs a real server")
    folder = Path(tempfile.mkdtemp(prefix="strop-postgres-"))
    # PostgreSQL refuses to run as root: the cluster belongs to the postgres user there.
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the PostgreSQL server as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def run(*command: str) -> None:
        result = subprocess.run([*run_as, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command[0]} failed: {result.stdout}\n{result.stderr}"

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "strop", "--auth=trust", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql://strop@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_study_in_postgresql_with_no_trial_lost_or_run_twice(tmp_path, postgres_url):
    config = search_config(tmp_path)
    folder = tmp_path / "search"
    command = [sys.executable, "-m", "strop", "search", str(config), "--trials", "6", "--storage", postgres_url,
               "--study-name", "shared", "--pruner", "none"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
               for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output

    # Plain Optuna reads the study, with the URL as given.
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    run_dirs = [t.user_attrs["strop:run_dir"] for t in trials]
    assert len(set(run_dirs)) == 6 and sorted(p.name for p in folder.glob("trial-*")) == sorted(run_dirs)
    # Each trial ran in exactly one worker, and both workers took trials.
    ran = [set(map(int, re.findall(r"^trial (\d+): ", output, flags=re.M))) for output in outputs]
    assert ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == set(range(6)), outputs
    assert len({t.user_attrs["strop:worker"] for t in trials}) == 2
    assert (folder / "best.yaml").is_file()


def test_a_worker_killed_mid_trial_is_taken_over_by_the_other(tmp_path, postgres_url):
    import signal
    import time

    # The kill must land between the first checkpoint and the end of the fit; 3,000 rows make an epoch of 0.15 s
    # to 1 s, depending on the machine, so 12 epochs leave the poll below time to see the checkpoint, and it
    # kills only a trial with no summary yet (one whose fit had finished would be found complete, not resumed)
    config = search_config(tmp_path, epochs=12, rows=3000)
    folder = tmp_path / "search"
    command = [sys.executable, "-m", "strop", "search", str(config), "--trials", "6", "--storage", postgres_url,
               "--study-name", "killed", "--pruner", "none"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    victim, survivor = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                        for _ in range(2))
    # Wait for a trial of the victim (its lock file is named after its process) past its first checkpoint.
    killed, deadline = None, time.monotonic() + 600
    while killed is None and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            trials = optuna.load_study(study_name="killed", storage=postgres_url).trials
        except KeyError:  # the study is not created yet
            continue
        for trial in trials:
            mine = f"-{victim.pid}-" in trial.user_attrs.get("strop:worker", "")
            run = folder / trial.user_attrs.get("strop:run_dir", "none")
            if (trial.state.name == "RUNNING" and mine and (run / "checkpoints/last/state.json").exists()
                    and not (run / "summary.json").exists()):
                os.kill(victim.pid, signal.SIGKILL)
                killed = trial.number
    victim.wait()
    assert killed is not None, "the victim finished before it could be killed mid-trial"
    output = survivor.communicate(timeout=900)[0]
    assert survivor.returncode == 0, output
    run_dir = f"trial-{killed:04d}"
    assert f"continuing {run_dir} from its checkpoint" in output  # the survivor took it over
    trials = optuna.load_study(study_name="killed", storage=postgres_url).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 6 and states.count("FAIL") == 1 and trials[killed].state.name == "FAIL"
    [retry] = [t for t in trials if t.user_attrs.get("strop:retry_of") == killed]
    assert retry.user_attrs["strop:run_dir"] == run_dir and retry.params == trials[killed].params
    run_dirs = [t.user_attrs["strop:run_dir"] for t in trials if t.state.name == "COMPLETE"]
    assert len(set(run_dirs)) == 6 and sorted(p.name for p in folder.glob("trial-*")) == sorted(run_dirs)
