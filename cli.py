"""The ``palsgd`` command. Each command parses, calls one library function, prints and writes files.

Bad input (ConfigError) becomes one line on stderr and exit status 2, never a traceback. Heavy modules
(torch, simpy, seaborn) are imported inside the commands, so ``palsgd --help`` is instant.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import sys
from pathlib import Path

import click

from .core.algorithms import ALGORITHMS
from .core.errors import ConfigError

EXIT_BAD_INPUT = 2
CPU_CLUSTER = "cpu-2core-gloo"


def _stack(options):
    """One decorator applying click options in the order they are listed."""

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _experiment_options(f):
    """The options that pick and shape an experiment; shared by simulate, sweep, run and calibrate."""
    return _stack([
        click.argument("experiment", required=False, type=click.Path(dir_okay=False, path_type=Path)),
        click.option("--workload", help="Workload preset name or TOML file (see `palsgd presets`)."),
        click.option("--cluster", help="Cluster preset name or TOML file (e.g. a calibration profile)."),
        click.option("--algorithms", help=f"Comma-separated subset of {','.join(ALGORITHMS)}."),
        click.option("--steps", type=int, help="Budget in steps (every local step counts as one)."),
        click.option("--epochs", type=float, help="Budget in epochs of workload.dataset_samples."),
        click.option("--seed", type=int, help="Seed of the step plan and of the simulated variability: "
                                            "0 <= seed < 2**63 (with --repeats R, seeds seed .. seed+R-1)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override any field, e.g. --set cluster.inter_node.bandwidth_gbps=10 (repeatable)."),
    ])(f)


def _output_options(what: str):
    """--out, --overwrite, --json and --report, shared by the simulator's commands."""
    return _stack([
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Write the results folder here."),
        click.option("--overwrite", is_flag=True, help="Move existing results in --out aside instead of refusing."),
        click.option("--json", "as_json", is_flag=True, help=f"Print {what} as a JSON list and nothing else."),
        click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Also write an HTML report."),
    ])


_convergence_option = click.option(
    "--convergence", "convergence_ref", metavar="FILE|NAME",
    help="Steps to a target loss relative to DDP (a [workload.convergence] file or preset; `palsgd time-to-target "
         "RUN... --loss L --export FILE` measures one): adds the speedup to the target.")


def _with_convergence(exp, ref):
    """``exp`` carrying the description ``ref`` names, replacing any its experiment file gave."""
    if ref is None:
        return exp
    from .core import convergence

    return convergence.with_convergence(exp, convergence.load(ref))


def _load(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides, extra=()):
    from .core.config import load

    if steps is not None and epochs is not None:
        raise ConfigError("give --steps or --epochs, not both", key="--steps", source="command line")
    names = None
    if algorithms is not None:
        names = [a.strip() for a in algorithms.split(",") if a.strip()]
        if not names:  # '' would otherwise mean "all of them"
            raise ConfigError("name at least one algorithm", key="--algorithms", value=algorithms,
                              source="command line")
    return load(experiment, workload=workload, cluster=cluster, algorithms=names, steps=steps,
                epochs=epochs, seed=seed, overrides=[*extra, *overrides])


def _check_output(path: Path | None, key: str) -> None:
    """A page the command writes at the end can be written: found before the work, not after it."""
    if path is not None:
        from .core import io

        io.check_writable(path, key)


def _check_positive(key: str, value: float | None) -> None:
    """A count or duration that must be a finite number > 0 (nan would turn a check off silently)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError("must be a finite number > 0", key=key, value=value, source="command line")


def _check_varies(varies: tuple[str, ...]) -> None:
    """The same key twice in --vary would silently keep only the last list."""
    keys = [v.partition("=")[0].strip() for v in varies]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError("given twice; put all its values in one --vary", key=twice[0], source="--vary")


def _handle_errors(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except ConfigError as err:
            click.echo(f"palsgd: error: {err}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except OSError as err:  # a path the user gave cannot be read or written: say which, not a traceback
            where = f"{err.filename}: " if err.filename else ""
            click.echo(f"palsgd: error: {where}{err.strerror or err}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("palsgd: interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="palsgd")
def main():
    """Predict (simulate) and measure (run) how much faster Local SGD, DiLoCo and PALSGD train than DDP."""


def _parse_like(pairs: tuple[str, ...]) -> dict[str, str]:
    """--assume-like ALGO=diloco, repeatable: {ALGO: "diloco"}."""
    like = {}
    for pair in pairs:
        name, _, other = (p.strip() for p in pair.partition("="))
        if name not in ALGORITHMS or name in ("ddp", "diloco") or other != "diloco":
            others = ", ".join(n for n in ALGORITHMS if n not in ("ddp", "diloco"))
            raise ConfigError(f"must be ALGO=diloco with ALGO one of {others}",
                              key="--assume-like", value=pair, source="command line")
        like[name] = other
    return like


@main.command()
@_experiment_options
@click.option("--repeats", type=int, help="Monte-Carlo repeats (seeds seed, seed+1, ...): gives a spread.")
@_convergence_option
@click.option("--engine", type=click.Choice(["auto", "exact", "fast"]), default="auto", show_default=True,
              help="exact: event by event; fast: sums and maxima of step times as arrays (docs/limits.md); "
                   "auto: fast where it applies and the exact engine would take over 2 s.")
@click.option("--prior/--no-prior", "use_prior", default=True, show_default=True,
              help="Without --convergence, take DiLoCo's steps to DDP's final loss from the published DiLoCo "
                   "scaling laws where their evidence reaches (docs/convergence-prior.md).")
@click.option("--assume-like", "like", multiple=True, metavar="ALGO=diloco",
              help="Assume ALGO needs the steps the prior gives DiLoCo (a choice of yours: the paper measured "
                   "DiLoCo only). Repeatable.")
@click.option("--sensitivity", is_flag=True,
              help="Also simulate the speedups vs inter-node bandwidth, H and nodes around this point (a few "
                   "seconds; always done with --json and --report).")
@_output_options("the summary rows")
@_handle_errors
def simulate(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides, repeats, convergence_ref,
             engine, use_prior, like, sensitivity, out, overwrite, as_json, report):
    """Predict the wall-clock of each algorithm on a cluster (SimPy discrete-event model)."""
    from .harness.commands import simulate as job

    _check_output(report, "--report")
    like = _parse_like(like)
    extra = [f"repeats={repeats}"] if repeats is not None else []
    exp = _with_convergence(_load(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides, extra),
                            convergence_ref)
    described_by = convergence_ref or (str(experiment) if experiment is not None else None)
    result = job.simulate_to_folder(exp, out=out, overwrite=overwrite, report=report,
                                    sensitivity=sensitivity or as_json, use_prior=use_prior, like=like,
                                    described_by=described_by, engine=engine)
    if report is not None:
        result.notes.append(_render_report(result.folders, report))
    if as_json:
        click.echo(json.dumps(job.json_rows(result.runs, result.sensitivity), indent=2))
        return
    click.echo(job.format_summary(exp, result.runs))
    if result.sensitivity is not None:
        click.echo(job.format_sensitivity(result.sensitivity))
    for line in result.notes:
        click.echo(line)


def _render_report(folders: list[Path], output: Path) -> str:
    from .reports.render import render_report

    return f"wrote {render_report(list(folders), output)}"


@main.command()
@_experiment_options
@click.option("--vary", "varies", multiple=True, required=True, metavar="KEY=VALUES",
              help="A field and its values: 'cluster.inter_node.bandwidth_gbps=1,10,100,400', "
                   "'cluster.nodes=1..64:x2' (geometric), '1..64:8' (step). Once or twice.")
@click.option("--jobs", type=int, help="Worker processes (default: all cores).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where points run: processes here, or Ray tasks on a Ray cluster (pip install 'palsgd[ray]').")
@click.option("--address", metavar="HOST:PORT", help="The Ray cluster's head (default: RAY_ADDRESS, else a local one).")
@click.option("--resume", is_flag=True, help="Continue the interrupted sweep in --out; finished points are kept.")
@_convergence_option
@_output_options("the sweep table")
@_handle_errors
def sweep(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides, varies, jobs, executor,
          address, resume, convergence_ref, out, overwrite, as_json, report):
    """Vary one or two fields and find where each algorithm overtakes DDP."""
    from .core import convergence
    from .harness.commands import simulate as job

    _check_positive("--jobs", jobs)
    _check_varies(varies)
    _check_output(report, "--report")
    if report is not None and out is None:
        raise ConfigError("--report needs --out (the report reads the results folder)", key="--report",
                          source="command line")
    exp = _with_convergence(_load(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides),
                            convergence_ref)
    result = job.sweep_to_folder(exp, list(varies), jobs=jobs, out=out, overwrite=overwrite,
                                 executor=executor, address=address, resume=resume)
    if report is not None:
        click.echo(_render_report([out], report))
    if as_json:
        click.echo(result.table.to_json(orient="records", indent=2))
        return
    click.echo(job.format_sweep(result))
    click.echo("\n".join(convergence.notes(exp)))


@main.command()
@_experiment_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("explore.html"),
              show_default=True)
@click.option("--jobs", type=int, help="Worker processes (default: all cores).")
@_handle_errors
def explore(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides, output, jobs):
    """Write an offline what-if page: sliders for bandwidth, latency, nodes, H, p and jitter."""
    from .harness.commands import explore as job
    from .harness.machinery.progress import Progress
    from .reports.explore import render_explore

    _check_positive("--jobs", jobs)
    _check_output(output, "--output")
    exp = _load(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides)
    with Progress(job.grid_size(exp), "explore") as progress:
        grid = job.explore(exp, jobs=jobs, progress=progress)
    path = render_explore(grid.table, [k for k, _ in grid.axes], output, base=grid.base,
                          notes=[job.engine_note(grid.table)],
                          title=f"{exp.workload.name} on {exp.cluster.name}")
    click.echo(f"wrote {path} ({len(grid.table) // len(exp.algorithms)} simulated points)")


@main.command()
@click.option("--kind", type=click.Choice(["workload", "cluster", "convergence", "all"]), default="all",
              show_default=True)
@_handle_errors
def presets(kind):
    """List the built-in workloads, clusters and convergence descriptions with their numbers."""
    from .harness.commands import simulate as job

    click.echo(job.format_presets(kind))


@main.command()
@_experiment_options
@click.option("--nproc-per-node", type=int, default=2, show_default=True, help="Ranks on this node.")
@click.option("--nnodes", type=int, default=1, show_default=True, help="Nodes in the job.")
@click.option("--node-rank", type=int, default=0, show_default=True, help="This node's rank.")
@click.option("--rdzv-endpoint", metavar="HOST:PORT", help="Rendezvous of a multi-node job.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--overwrite", is_flag=True, help="Move existing results in --out aside instead of refusing.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--emulate-network", metavar="[nodes=K,]rate=1gbit,delay=5ms[,jitter=1ms]",
              help="Emulated hosts behind shaped links (root, Linux): each rank its own host, or K nodes whose "
                   "ranks share a loopback [intra_rate=,intra_delay=] and groups of nodes joined by a WAN "
                   "[groups=G,wan_rate=,wan_delay=]. See docs/network-emulation.md.")
@click.option("--emulate-compute", is_flag=True,
              help="Emulated accelerators: compute sleeps the cluster's modelled times; losses mean nothing.")
@click.option("--inject-fault", metavar="rank=R,step=S,kind=crash|hang|slow", help="For testing failures.")
@click.option("--timeout-s", type=float, default=300.0, show_default=True,
              help="A rank that makes no progress for this long is declared hung.")
@click.option("--time-dilation", type=float, default=1.0, show_default=True, metavar="K",
              help="With --emulate-compute and --emulate-network: run the emulated cluster K times slower (sleeps "
                   "x K, links rate/K, delays x K) and divide what is measured by K, so the host's own costs "
                   "shrink to 1/K. See docs/network-emulation.md.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Also write an HTML report.")
@_handle_errors
def run(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides, nproc_per_node, nnodes,
        node_rank, rdzv_endpoint, out, overwrite, resume, emulate_network, emulate_compute, inject_fault, timeout_s,
        report, time_dilation):
    """Run the algorithms for real under torchrun, measure every step, compare with the prediction."""
    from .harness.commands import run as run_command

    if cluster is None and experiment is None and shutil.which("nvidia-smi") is None:
        cluster = CPU_CLUSTER  # predict for the CPUs the run uses, not for the default GPU cluster
    if nproc_per_node < 1 or nnodes < 1:
        raise ConfigError("must be >= 1", key="--nproc-per-node" if nproc_per_node < 1 else "--nnodes",
                          value=min(nproc_per_node, nnodes), source="command line")
    _check_positive("--timeout-s", timeout_s)
    _check_output(report, "--report")
    extra = [f"cluster.nodes={nnodes}", f"cluster.gpus_per_node={nproc_per_node}", *_compute(emulate_compute)]
    exp = _load(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides, extra)
    launch = run_command.launch_of(nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                                rdzv_endpoint=rdzv_endpoint, emulate_network=emulate_network,
                                inject_fault=inject_fault, timeout_s=timeout_s, resume=resume,
                                time_dilation=time_dilation)
    code = run_command.run_to_folder(exp, out, launch, overwrite=overwrite, echo=click.echo)
    if report is not None and node_rank == 0:  # a failed run's report shows where it stopped
        click.echo(_render_report([out], report))
    sys.exit(code)


@main.command()
@_experiment_options
@click.option("--nproc-per-node", type=int, default=2, show_default=True)
@click.option("--emulate-network", metavar="[nodes=K,]rate=1gbit,delay=5ms",
              help="Calibrate across an emulated network; with nodes=K [intra_rate=,intra_delay=] the intra- and "
                   "inter-node links are fitted apart (no WAN groups). See docs/network-emulation.md.")
@click.option("--emulate-compute", is_flag=True,
              help="Emulated accelerators: compute sleeps the cluster's modelled times; losses mean nothing.")
@click.option("--from-trace", "traces", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Fit from PyTorch profiler traces of a DDP job (.json/.json.gz files or a folder; repeatable) "
                   "instead of measuring here; --cluster, if given, is the flat all-reduce to fit DDP's buckets to.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The cluster profile to write (a TOML file that --cluster accepts).")
@click.option("--from-nccl-tests", "nccl_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Fit the profile to nccl-tests output instead of measuring here (repeatable: a "
                                   "one-node file fits the intra-node tier, a multi-node file the inter-node tier; "
                                   "--cluster is the base for the rest).")
@click.option("--fit-min-bytes", type=click.IntRange(min=0), default=0, show_default=True, metavar="BYTES",
              help="With --from-nccl-tests: fit only the sizes of at least BYTES (those a job sends).")
@click.option("--time-dilation", type=float, default=1.0, show_default=True, metavar="K",
              help="With --emulate-compute and --emulate-network: run the emulated cluster K times slower (sleeps "
                   "x K, links rate/K, delays x K) and divide what is measured by K, so the host's own costs "
                   "shrink to 1/K. See docs/network-emulation.md.")
@_handle_errors
def calibrate(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides, nproc_per_node,
              emulate_network, emulate_compute, traces, out, nccl_files, fit_min_bytes, time_dilation):
    """Measure compute and all-reduce times here and write a cluster profile for `simulate --cluster`."""
    if fit_min_bytes and not nccl_files:
        raise ConfigError("applies only with --from-nccl-tests", key="--fit-min-bytes", value=fit_min_bytes,
                          source="command line")
    if traces and nccl_files:
        raise ConfigError("fit from one kind of evidence at a time", key="--from-trace", source="command line")
    if (traces or nccl_files) and (emulate_network or emulate_compute):
        raise ConfigError("measures here; it does not apply with --from-trace or --from-nccl-tests",
                          source="command line", key="--emulate-network" if emulate_network else "--emulate-compute")
    if (traces or nccl_files) and time_dilation != 1:
        raise ConfigError("measures here; it does not apply with --from-trace or --from-nccl-tests",
                          key="--time-dilation", value=time_dilation, source="command line")
    if traces:
        from .core.config import load
        from .harness.machinery.trace_calibrate import calibrate_from_traces

        base = load(cluster=cluster).cluster if cluster else None
        click.echo(calibrate_from_traces(list(traces), out, base=base))
        return
    if nccl_files:
        from .harness.commands.nccl_calibrate import calibrate_from_nccl_tests

        path, table = calibrate_from_nccl_tests(list(nccl_files), out, cluster, " ".join(["palsgd", *sys.argv[1:]]),
                                                fit_min_bytes)
        click.echo(table)
        click.echo(f"wrote {path} and {path.with_suffix('.fit.csv')}")
        return
    from .harness.commands import run as run_command

    extra = ["cluster.nodes=1", f"cluster.gpus_per_node={nproc_per_node}", *_compute(emulate_compute)]
    exp = _load(experiment, workload, cluster, algorithms, steps, epochs, seed, overrides, extra)
    run_command.calibrate_to_file(exp, out, nproc_per_node=nproc_per_node, emulate_network=emulate_network,
                                  echo=click.echo, time_dilation=time_dilation)


@main.command()
@click.option("--quick", is_flag=True, help="A subset that finishes in a few minutes (what CI runs).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--overwrite", is_flag=True, help="Move existing results in --out aside instead of refusing.")
@click.option("--no-emulation", is_flag=True, help="CPU suite: only the unshaped network (no root needed).")
@click.option("--suite", type=click.Choice(["cpu", "cluster"]), default="cpu", show_default=True,
              help="cpu: tiny models trained on this machine's cores; cluster: emulated accelerators on a two-tier "
                   "emulated cluster of 8 ranks (root).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Also write an HTML report.")
@click.option("--trace", "traces", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Replay PyTorch profiler traces of a DDP job instead (files or folders; repeatable): the step "
                   "predicted from the trace's own compute and a network, against the trace's.")
@click.option("--cluster", help="With --trace: the network profile (preset name or TOML file).")
@click.option("--network-trace", "network_traces", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="With --trace: fit the network from these other traces (repeatable).")
@click.option("--time-dilation", type=float, default=1.0, show_default=True, metavar="K",
              help="With --suite cluster: run the emulated clusters K times slower and divide what is measured "
                   "by K (see docs/network-emulation.md).")
@_handle_errors
def validate(quick, out, overwrite, no_emulation, suite, report, traces, cluster, network_traces, time_dilation):
    """Run real runs and predictions of the same experiments; print the error of every prediction."""
    if traces and time_dilation != 1:
        raise ConfigError("applies to --suite cluster, not to replayed traces", key="--time-dilation",
                          value=time_dilation, source="command line")
    if traces:
        from .core.config import load
        from .harness.commands.trace_validate import validate_traces

        profile = load(cluster=cluster).cluster if cluster else None
        click.echo(validate_traces(list(traces), out, cluster=profile, network_paths=list(network_traces)))
        return
    if cluster or network_traces:
        raise ConfigError("goes with --trace", key="--cluster" if cluster else "--network-trace",
                          source="command line")
    from .harness.commands import validate as job

    if suite == "cluster" and no_emulation:
        raise ConfigError("the cluster suite runs on an emulated network", key="--no-emulation",
                          source="command line")
    _check_output(report, "--report")
    code = job.validate_to_folder(out, quick=quick, overwrite=overwrite, emulate=not no_emulation, suite=suite,
                                  echo=click.echo, time_dilation=time_dilation)
    if report is not None:
        click.echo(_render_report([out], report))
    sys.exit(code)


def _compute(emulate: bool) -> list[str]:
    return ['train.compute="emulated"'] if emulate else []


@main.command(name="time-to-target")
@click.argument("curves", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--loss", "target_loss", type=float, required=True, help="Target held-out loss.")
@click.option("--workload", help="For a CSV of curves: the workload preset or file they belong to.")
@click.option("--cluster", help="Predict on this cluster preset or profile (default: as measured).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field of the cluster.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--export", "export_to", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the steps to the loss relative to DDP, measured by the run folders, as a convergence "
                   "description for --convergence (runs with different H, p or workers give a function of them).")
@click.option("--convergence", "convergence_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also predict each algorithm's time to the target from this convergence description "
                   "(measured elsewhere), with its error against the run.")
@_handle_errors
def time_to_target(curves, target_loss, workload, cluster, overrides, as_json, export_to, convergence_file):
    """Wall-clock to reach a held-out loss on a measured or simulated cluster.

    CURVES is a `palsgd run` results folder, or a CSV with columns algorithm, step, loss; several run
    folders with --export."""
    from .harness.commands import targets

    if not math.isfinite(target_loss):
        raise ConfigError("must be a finite number", key="--loss", value=target_loss, source="command line")
    if export_to is not None and convergence_file is not None:
        raise ConfigError("give --export or --convergence, not both", key="--convergence", source="command line")
    if export_to is not None:
        from .harness.commands import convergence_export

        conv, notes = convergence_export.export_to_file(list(curves), target_loss, export_to)
        click.echo(json.dumps(conv.to_dict(), indent=2) if as_json
                   else convergence_export.format_export(conv, notes, export_to))
        return
    if len(curves) > 1:
        raise ConfigError("give one run folder or CSV (several only with --export)", key="CURVES",
                          value=[str(c) for c in curves], source="command line")
    described = None
    if convergence_file is not None:
        from .core import convergence

        described = convergence.load(convergence_file)
    table = targets.time_to_target(curves[0], target_loss, cluster=cluster, overrides=list(overrides),
                                   workload=workload, described=described)
    click.echo(table.to_json(orient="records", indent=2) if as_json else targets.format_targets(table))


@main.command()
@click.argument("experiment", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--workload", help="Workload preset name or TOML file (see `palsgd presets`).")
@click.option("--cluster", help="Cluster preset name or TOML file (e.g. a calibration profile).")
@click.option("--convergence", "convergence_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Steps to the target relative to DDP (`palsgd time-to-target RUN... --loss L --export FILE`).")
@click.option("--algorithms", help=f"Comma-separated subset of {','.join(ALGORITHMS)} to search.")
@click.option("--repeats", type=int, default=5, show_default=True,
              help="Monte-Carlo seeds of the best configurations and DDP (the 5-95% band).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override any field (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON and nothing else.")
@_handle_errors
def advise(experiment, workload, cluster, convergence_file, algorithms, repeats, overrides, as_json):
    """Search algorithm x H x p x payload dtype for the fastest configuration to the target loss."""
    from .core import convergence
    from .harness.commands import advise as job

    exp = _load(experiment, workload, cluster, algorithms, None, None, None, overrides, [f"repeats={repeats}"])
    advice = job.advise(exp, convergence.load(convergence_file))
    click.echo(json.dumps(job.advice_json(advice), indent=2) if as_json else job.format_advice(advice))


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True)
@_handle_errors
def report(results, output):
    """Turn result folders (simulate, sweep, run, validate) into one self-contained HTML page."""
    from .reports.render import render_report

    _check_output(output, "--output")
    path = render_report(list(results), output)
    click.echo(f"wrote {path}")


@main.command(name="cleanup-network")
@_handle_errors
def cleanup_network():
    """Remove network namespaces left behind by emulated runs whose owner died (needs root)."""
    from .harness.machinery import netem

    removed = netem.cleanup_stale()
    click.echo(f"removed {len(removed)} leftover namespace(s)" + (f": {', '.join(removed)}" if removed else ""))


if __name__ == "__main__":
    main()
