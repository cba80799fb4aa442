"""Fuzzing of the commands that launch or read results: run, calibrate, validate, time-to-target, explore,
advise and report, in process (CliRunner).

Whatever the input: exit status 0, 1 or 2; never a traceback; status 2 comes with one line that names the
option, key or file; a refused input writes nothing (no folder created, no file changed). Nothing heavy
runs: the launchers (torchrun, calibration, the validation cases, explore's grid, advise's search, the
simulator behind time-to-target) are replaced by one that raises ``WouldLaunch``, so an input that gets
that far was accepted. The preflight runs in process, with its real checks. The big runs are in the slow set.
"""

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from palsgd.cli import main
from palsgd.core import config
from palsgd.harness.machinery import store

WORKLOAD, CLUSTER = "gpt-tiny", "cpu-2core-gloo"
WHERE = ["--workload", WORKLOAD, "--cluster", CLUSTER]


class WouldLaunch(BaseException):
    """Raised where the real work would start; not an Exception, so no handler on the way can hide it."""


def _would_launch(*args, **kwargs):
    raise WouldLaunch


def _preflight_in_process(exp, local_ranks):
    from palsgd.real import preflight

    preflight.check(config.from_dict(exp.to_dict()), local_ranks)  # as the subprocess sees it


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Result folders of every kind, made once and copied into each example's sandbox."""
    root = tmp_path_factory.mktemp("templates")
    made = CliRunner().invoke(main, ["simulate", *WHERE, "--steps", "20", "--out", str(root / "simulate")])
    assert made.exit_code == 0, made.output
    same = config.load(workload=WORKLOAD, cluster=CLUSTER, overrides=["cluster.nodes=1", "cluster.gpus_per_node=2"])
    for name, exp in (("run", same), ("run_other", same.replace(seed=same.seed + 1))):
        store.start(root / name, "run", exp)
        (root / name / "metrics.csv").write_text(
            "algorithm,step,loss,eval_loss,end_s,source\n"
            + "".join(f"{a},{s},{4 - s / 10},{4.1 - s / 10},{s * 0.5},real\n" for a in ("ddp", "palsgd")
                      for s in range(10)))
        store.finish(root / name, "failed")
    (root / "empty").mkdir()
    (root / "file").write_text("not a folder\n")
    (root / "garbage").mkdir()
    (root / "garbage" / "manifest.json").write_text('{"kind": "run", "status"')
    for name in ("simulate", "run", "run_other"):
        store.unlock(root / name)
    return root


FOLDER_KINDS = ["missing", "empty", "file", "simulate", "run", "run_other", "garbage", "locked"]


@pytest.fixture(scope="module", autouse=True)
def no_launch(templates):
    """Every launcher raises WouldLaunch; nothing touches the network or starts a process."""
    from palsgd.harness.commands import advise, explore, validate
    from palsgd.harness.machinery import calibrate, launch, netem, pipeline
    from palsgd.sim import engine

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launch, "_Group", _would_launch)
        mp.setattr(pipeline, "check_before_launch", _preflight_in_process)
        mp.setattr(netem, "preflight", lambda *a, **k: None)
        mp.setattr(netem.EmulatedNetwork, "__enter__", lambda self: self)
        mp.setattr(netem.EmulatedNetwork, "close", lambda self: None)
        mp.setattr(calibrate, "calibrate", _would_launch)
        mp.setattr(validate, "run_case", _would_launch)
        mp.setattr(explore, "explore", _would_launch)
        mp.setattr(advise, "advise", _would_launch)
        mp.setattr(engine, "simulate", _would_launch)
        yield


@contextlib.contextmanager
def sandbox(templates, kind: str = "missing"):
    """A fresh folder with ``out`` of the given kind in it; afterwards every lock is released (the CLI
    holds them until the process ends, and this process runs thousands of commands)."""
    root = Path(tempfile.mkdtemp(dir=templates.parent))
    out = root / "out"
    if kind == "file":
        shutil.copy(templates / "file", out)
    elif kind == "locked":
        out.mkdir()
    elif kind != "missing":
        shutil.copytree(templates / kind, out)
    fd = None
    if kind == "locked":  # held by "another command": an open file description of its own
        fd = os.open(out / store.LOCK, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield root, out
    finally:
        if fd is not None:
            os.close(fd)
        for held in list(store._held):
            store.unlock(held)
        shutil.rmtree(root, ignore_errors=True)


def _snapshot(root: Path) -> dict:
    """Every folder and every file's size and time, but lock files: a command takes a folder's lock (and
    so may leave its empty file) before it reads what it then refuses, e.g. an unreadable manifest."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.name != store.LOCK}


def _names_the_input(line: str, argv: list[str], root: Path) -> bool:
    """The line names an option (given or missing), an option's key without its dashes, an argument, a
    dotted key, or a file under the sandbox."""
    options = [a.lstrip("-") for a in argv if a.startswith("-")] + ["CURVES", "RESULTS", "EXPERIMENT"]
    return (any(re.search(rf"\b{re.escape(o)}\b", line) for o in options if o) or "--" in line
            or re.search(r"\b[a-z_]+\.[a-z_]+", line) is not None or str(root) in line)


def _check(root: Path, argv: list[str]) -> str:
    """Run one command line; check the invariants; return "launched", "refused" or "ok"."""
    outcome = _outcome(root, argv)
    event(f"{argv[0]}: {outcome}")  # the statistics (--hypothesis-show-statistics) show the mix
    return outcome


def _outcome(root: Path, argv: list[str]) -> str:
    before = _snapshot(root)
    try:
        result = CliRunner().invoke(main, argv)
    except WouldLaunch:
        return "launched"
    context = (argv, result.output, result.exception)
    assert result.exit_code in (0, 1, 2), context
    assert result.exception is None or isinstance(result.exception, SystemExit), context
    assert "Traceback" not in result.output, context
    if result.exit_code != 2:
        return "ok"
    lines = result.stderr.strip().splitlines()
    # Ours: one line. Click's own usage errors end with a line naming the option.
    line = lines[0] if lines[0].startswith("palsgd: error:") else lines[-1]
    assert len(lines) == 1 or line.startswith("Error:"), context
    assert _names_the_input(line, argv, root), context
    assert _snapshot(root) == before, ("refused input wrote files", *context)
    return "refused"


def _options(pairs: dict) -> list[str]:
    """{option: value or None or True} as argv; None leaves the option out, True is a flag."""
    argv = []
    for key, value in pairs.items():
        if value is True:
            argv.append(key)
        elif value not in (None, False):
            argv += [key, value]
    return argv


def _option(valid, invalid):
    """Left out, a valid value or, when ``invalid`` is given, sometimes an invalid one."""
    choices = [st.none(), st.sampled_from(valid)]
    return st.one_of(*choices, *([] if invalid is None else [invalid]))


def _garbage(parts, values):
    """Comma-separated key=value parts, some of them wrong, or any text."""
    part = st.tuples(st.sampled_from(parts), st.sampled_from(values)).map("".join)
    return st.one_of(st.lists(part, max_size=6).map(",".join), st.text(max_size=12))


faults = _garbage(["rank", "step", "kind", "factor", "bogus", ""],
                  ["", "=0", "=1", "=3", "=-1", "=59", "=60", "=crash", "=hang", "=slow", "=nan", "=inf", "=2.5", "=x"])
networks = _garbage(["rate", "delay", "jitter", "nodes", "intra_rate", "intra_delay", "groups", "wan_rate",
                     "wan_delay", "x"],
                    ["", "=1gbit", "=100mbit", "=5ms", "=0", "=1", "=2", "=3", "=-1", "=nan", "=inf", "=1e400kbit",
                     "=2us", "=1s", "=x"])
def _run_options(garbage: bool):
    """The options of `palsgd run`; with ``garbage``, any of them may be wrong."""
    def option(valid, invalid):
        return _option(valid, invalid if garbage else None)

    return st.fixed_dictionaries({
        "--nproc-per-node": option(["1", "2", "3", "4"], st.sampled_from(["0", "-1", "100000", "x", "", "1.5"])),
        "--nnodes": option(["1", "2"], st.sampled_from(["0", "-2", "x"])),
        "--node-rank": option(["0", "1"], st.sampled_from(["-1", "5", "x"])),
        "--rdzv-endpoint": option(["localhost:29500"], st.sampled_from(["host", ":", "", "a:b", "[::1]:1"])),
        "--timeout-s": option(["300", "1", "1e-3"], st.sampled_from(["0", "-1", "nan", "inf", "x"])),
        "--steps": option(["20", "40"], st.sampled_from(["0", "-2", "8", "1e9", "100000000000"])),
        "--algorithms": option(["ddp", "palsgd,ddp", "diloco,local_sgd"], st.sampled_from(["sgd", "", ","])),
        "--inject-fault": option(["rank=0,step=2,kind=crash", "rank=1,step=5,kind=slow,factor=2"], faults),
        "--emulate-network": option(["rate=1gbit", "rate=100mbit,delay=5ms,jitter=1ms", "nodes=2,rate=1gbit"],
                                    networks),
        "--emulate-compute": st.booleans(),
        "--resume": st.sampled_from([False, False, False, True]),
        "--overwrite": st.sampled_from([False, False, False, True]),
    })


def _run(templates, kind, opts):
    with sandbox(templates, kind) as (root, out):
        argv = ["run", *WHERE, "--out", str(out), *_options(opts)]
        outcome = _check(root, argv)
        if outcome == "launched" and opts["--node-rank"] in (None, "0"):  # node 0 prepared and locked it
            assert (out / "manifest.json").exists(), argv
    return outcome


FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def _run_opts(**given) -> dict:
    """Options of `palsgd run` for an explicit example: the flags off, the rest left out, but ``given``."""
    flags = {"--emulate-compute": False, "--resume": False, "--overwrite": False}
    keys = ("--nproc-per-node", "--nnodes", "--node-rank", "--rdzv-endpoint", "--timeout-s", "--steps",
            "--algorithms", "--inject-fault", "--emulate-network")
    return {**dict.fromkeys(keys), **flags, **{f"--{k.replace('_', '-')}": v for k, v in given.items()}}


@FAST
@given(kind=st.sampled_from(FOLDER_KINDS), opts=_run_options(garbage=True))
# The first and the last wrote a results folder before they were refused.
@example(kind="missing", opts=_run_opts(nnodes="2"))
@example(kind="run_other", opts=_run_opts(resume=True))
@example(kind="missing", opts=_run_opts(nproc_per_node="3", emulate_network="nodes=2,rate=1gbit"))
def test_run_options(templates, kind, opts):
    _run(templates, kind, opts)


@pytest.mark.slow
@SLOW
@given(kind=st.sampled_from(FOLDER_KINDS), opts=_run_options(garbage=True))
def test_run_options_many(templates, kind, opts):
    _run(templates, kind, opts)


@pytest.mark.slow
@SLOW
@given(kind=st.sampled_from(FOLDER_KINDS), opts=_run_options(garbage=False))
def test_run_valid_options_many(templates, kind, opts):
    """Valid values that may still not fit together (a fault on rank 1 of one rank, two nodes and no
    rendezvous, an emulated network over two nodes): most launch, the rest are refused cleanly."""
    _run(templates, kind, opts)


# -- calibrate and validate: the profile or folder they would write ---------------------------------------

calibrate_options = st.fixed_dictionaries({
    "--nproc-per-node": _option(["1", "2", "4"], st.sampled_from(["0", "-1", "100000", "x"])),
    "--emulate-network": _option(["rate=1gbit", "rate=100mbit,delay=5ms"], networks),
    "--emulate-compute": st.booleans(),
    "--algorithms": _option(["ddp", "palsgd"], st.sampled_from(["sgd", ""])),
    "--steps": _option(["20"], st.sampled_from(["0", "-1"])),
})
PROFILE_PATHS = ["profile.toml", "new/dir/profile.toml", "out/profile.toml", "out", "file/profile.toml"]


@contextlib.contextmanager
def _with_file(templates):
    """A sandbox with ``out`` a run folder and ``file`` a file, for paths inside and under both."""
    with sandbox(templates, "run") as (root, out):
        shutil.copy(templates / "file", root / "file")
        yield root, out


def _calibrate(templates, path, opts):
    with _with_file(templates) as (root, _out):
        _check(root, ["calibrate", *WHERE, "--out", str(root / path), *_options(opts)])


@FAST
@given(path=st.sampled_from(PROFILE_PATHS), opts=calibrate_options)
@example(path="new/dir/profile.toml",  # the refused profile's folder was made before the preflight
         opts={"--nproc-per-node": "100000", "--emulate-network": None, "--emulate-compute": False,
               "--algorithms": None, "--steps": None})
def test_calibrate_options(templates, path, opts):
    _calibrate(templates, path, opts)


@pytest.mark.slow
@settings(SLOW, max_examples=500)
@given(path=st.sampled_from(PROFILE_PATHS), opts=calibrate_options)
def test_calibrate_options_many(templates, path, opts):
    _calibrate(templates, path, opts)


validate_options = st.fixed_dictionaries({
    "--quick": st.booleans(), "--overwrite": st.booleans(), "--no-emulation": st.booleans(),
    "--suite": _option(["cpu", "cluster"], st.sampled_from(["gpu", ""])),
    "--report": _option(["report.html"], st.sampled_from(["out", "file/report.html"])),
})


def _validate(templates, kind, opts):
    with sandbox(templates, kind) as (root, out):
        if opts["--report"] is not None:
            opts = {**opts, "--report": str(root / opts["--report"])}
        _check(root, ["validate", "--out", str(out), *_options(opts)])


@FAST
@given(kind=st.sampled_from(FOLDER_KINDS), opts=validate_options)
def test_validate_options(templates, kind, opts):
    _validate(templates, kind, opts)


@pytest.mark.slow
@settings(SLOW, max_examples=400)
@given(kind=st.sampled_from(FOLDER_KINDS), opts=validate_options)
def test_validate_options_many(templates, kind, opts):
    _validate(templates, kind, opts)


# -- readers: time-to-target, advise, explore, report ----------------------------------------------------

cells = st.one_of(st.sampled_from(["ddp", "palsgd", "local_sgd", "sgd", "", "nan", "inf", "-1", "0", "3.5", "1e400",
                                   '"', '"a,b"', " ", "x"]), st.integers(-5, 100).map(str))
csv_rows = st.lists(st.lists(cells, max_size=5).map(",".join), max_size=6)
valid_rows = st.lists(st.tuples(st.sampled_from(["ddp", "palsgd"]), st.integers(0, 60), st.floats(0.5, 5))
                      .map(lambda r: f"{r[0]},{r[1]},{r[2]}"), min_size=1, max_size=8)
curve_csvs = st.one_of(
    valid_rows.map(lambda rows: "\n".join(["algorithm,step,loss", *rows]) + "\n"),
    st.tuples(st.permutations(["algorithm", "step", "loss", "extra"]).map(lambda c: ",".join(c[:3])), csv_rows)
    .map(lambda hr: "\n".join([hr[0], *hr[1]]) + "\n"),
    st.text(max_size=60),
)


def _mangle(path: Path, how: str, data: bytes) -> None:
    """Cut a file mid-way, replace it with garbage, or delete it."""
    if how == "cut":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif how == "garbage":
        path.write_bytes(data)
    else:
        path.unlink()


mangles = st.tuples(st.sampled_from(["manifest.json", "runs.csv", "metrics.csv", "steps.parquet",
                                     "experiment.toml", "totals.csv"]),
                    st.sampled_from(["cut", "garbage", "delete"]), st.binary(max_size=40)) | st.none()


def _mangled(out: Path, mangle) -> None:
    if mangle is None:
        return
    name, how, data = mangle
    if (out / name).is_file():
        _mangle(out / name, how, data)


target_options = st.fixed_dictionaries({
    "--loss": st.sampled_from(["3.5", "0", "-1", "nan", "inf", "x", "1e400"]),
    "--workload": _option([WORKLOAD], st.sampled_from(["nope", ""])),
    "--cluster": _option([CLUSTER], st.sampled_from(["nope"])),
    "--set": _option(["cluster.nodes=2"], st.sampled_from(["cluster.nodes=0", "bogus=1", "x"])),
    "--json": st.booleans(),
})


def _time_to_target(templates, source, csv, mangle, export, opts):
    with sandbox(templates, "run" if source == "csv" else source) as (root, out):
        curves = out
        if source == "csv":
            curves = root / "curves.csv"
            curves.write_text(csv)
        else:
            _mangled(out, mangle)
        argv = ["time-to-target", str(curves), *_options(opts)]
        _check(root, argv + (["--export", str(root / "conv.toml")] if export else []))


@FAST
@given(source=st.sampled_from(["csv", "run", "simulate", "garbage", "empty"]), csv=curve_csvs, mangle=mangles,
       export=st.booleans(), opts=target_options)
def test_time_to_target_inputs(templates, source, csv, mangle, export, opts):
    _time_to_target(templates, source, csv, mangle, export, opts)


@pytest.mark.slow
@settings(SLOW, max_examples=1000)
@given(source=st.sampled_from(["csv", "run", "simulate", "garbage", "empty"]), csv=curve_csvs, mangle=mangles,
       export=st.booleans(), opts=target_options)
def test_time_to_target_inputs_many(templates, source, csv, mangle, export, opts):
    _time_to_target(templates, source, csv, mangle, export, opts)


VALID_CONVERGENCE = ["[workload.convergence]", "target_loss = 3.0", "ddp_steps = 400", 'source = "hand-made"',
                     "[[workload.convergence.points]]", 'algorithm = "local_sgd"', "sync_every = 8",
                     "steps_vs_ddp = 1.5", 'source = "hand-made"']
bad_lines = st.sampled_from([
    "[workload.convergence]", "target_loss = 3.0", "target_loss = -1", "ddp_steps = 400", "ddp_steps = 0",
    'source = "hand-made"', "source = 3", "ddp_workers = 8", "ddp_workers = 0", "[[workload.convergence.points]]",
    'algorithm = "local_sgd"', 'algorithm = "sgd"', "sync_every = 8", "sync_every = -1", "p = 0.2", "p = 2",
    "steps_vs_ddp = 1.5", "steps_vs_ddp = 0", "steps_vs_ddp = nan", 'payload_dtype = "bf16"', "bogus = 1", "[x",
    "points = 3", "",
])
convergence_files = st.one_of(
    st.just("\n".join(VALID_CONVERGENCE)),
    st.tuples(st.integers(0, len(VALID_CONVERGENCE)), st.lists(bad_lines, max_size=2))  # one place made wrong
    .map(lambda at: "\n".join([*VALID_CONVERGENCE[:at[0]], *at[1], *VALID_CONVERGENCE[at[0] + 1:]])),
    st.lists(bad_lines, max_size=14).map("\n".join),
)
advise_options = st.fixed_dictionaries({
    "--repeats": _option(["1", "2"], st.sampled_from(["0", "-1", "x"])),
    "--algorithms": _option(["ddp,local_sgd", "palsgd"], st.sampled_from(["sgd", ""])),
    "--set": _option(["cluster.nodes=4"], st.sampled_from(["cluster.nodes=0", "bogus=1"])),
})


def _advise(templates, convergence, opts):
    with sandbox(templates) as (root, _out):
        path = root / "conv.toml"
        path.write_text(convergence)
        _check(root, ["advise", *WHERE, "--convergence", str(path), *_options(opts)])


@FAST
@given(convergence=convergence_files, opts=advise_options)
def test_advise_inputs(templates, convergence, opts):
    _advise(templates, convergence, opts)


@pytest.mark.slow
@settings(SLOW, max_examples=800)
@given(convergence=convergence_files, opts=advise_options)
def test_advise_inputs_many(templates, convergence, opts):
    _advise(templates, convergence, opts)


explore_options = st.fixed_dictionaries({
    "--jobs": _option(["1", "2"], st.sampled_from(["0", "-1", "x"])),
    "--steps": _option(["20", "40"], st.sampled_from(["0", "-1", "8"])),
    "--algorithms": _option(["ddp,palsgd", "diloco"], st.sampled_from(["sgd", ""])),
    "--set": _option(["cluster.inter_node.bandwidth_gbps=10"], st.sampled_from(["cluster.nodes=0", "bogus=1"])),
    "-o": _option(["explore.html"], st.sampled_from(["out", "file/explore.html"])),
})


def _explore(templates, opts):
    with _with_file(templates) as (root, _out):
        if opts["-o"] is not None:
            opts = {**opts, "-o": str(root / opts["-o"])}
        _check(root, ["explore", *WHERE, *_options(opts)])


@FAST
@given(opts=explore_options)
def test_explore_options(templates, opts):
    _explore(templates, opts)


@pytest.mark.slow
@settings(SLOW, max_examples=500)
@given(opts=explore_options)
def test_explore_options_many(templates, opts):
    _explore(templates, opts)


def _report(templates, kinds, mangle, output):
    with _with_file(templates) as (root, _out):
        folders = []
        for i, kind in enumerate(kinds):
            folder = root / f"r{i}"
            if kind == "file":
                shutil.copy(templates / kind, folder)
            elif kind != "missing":
                shutil.copytree(templates / kind, folder)
            folders.append(folder)
        _mangled(folders[0], mangle)
        _check(root, ["report", *map(str, folders), "-o", str(root / output)])


report_kinds = st.lists(st.sampled_from(["simulate", "run", "simulate", "run", "garbage", "empty", "missing", "file"]),
                        min_size=1, max_size=3)
report_outputs = st.sampled_from(["report.html", "out", "file/report.html", "new/report.html"])


@settings(FAST, max_examples=10)
@given(kinds=report_kinds, mangle=mangles, output=report_outputs)
def test_report_inputs(templates, kinds, mangle, output):
    _report(templates, kinds, mangle, output)


@pytest.mark.slow
@settings(SLOW, max_examples=150)  # a report takes about half a second
@given(kinds=report_kinds, mangle=mangles, output=report_outputs)
def test_report_inputs_many(templates, kinds, mangle, output):
    _report(templates, kinds, mangle, output)
