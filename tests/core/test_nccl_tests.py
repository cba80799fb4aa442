"""Reading nccl-tests output: the published files under tests/data/nccl-tests and the header variants of
older and newer nccl-tests versions (lines quoted from public issue threads, named beside each)."""

from pathlib import Path

import pytest

from palsgd.core import nccl_tests
from palsgd.core.errors import ConfigError

DATA = Path(__file__).parents[1] / "data" / "nccl-tests"

# file: (collective, nodes, GPUs per node, rows, first size, last size, avg busbw)
PUBLISHED = {
    "a3mega-2x8-h100-tcpxo.txt": ("all_reduce", 2, 8, 31, 8, 8589934592, 70.742),
    "alps-2x4-gh200-ofi.txt": ("all_reduce", 2, 4, 25, 8, 134217728, 19.7866),
    "alps-2x4-gh200-no-ofi-plugin.txt": ("all_reduce", 2, 4, 25, 8, 134217728, 1.58767),
    "alps-2x1-gh200-ofi.txt": ("all_reduce", 2, 1, 8, 1048576, 134217728, 14.9966),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_files_header_and_rows(name):
    (run,) = nccl_tests.read(DATA / name)
    collective, nodes, gpus, count, first, last, avg = PUBLISHED[name]
    assert (run.collective, run.nodes, run.gpus_per_node, len(run.rows)) == (collective, nodes, gpus, count)
    assert (run.rows[0].size_bytes, run.rows[-1].size_bytes, run.avg_busbw_gbytes_s) == (first, last, avg)
    # busbw = size / time * 2(n-1)/n for all-reduce (nccl-tests PERFORMANCE.md): the columns were read in order
    n = len(run.ranks)
    big = run.rows[-1]
    assert big.size_bytes / big.time_s / 1e9 * 2 * (n - 1) / n == pytest.approx(big.busbw_gbytes_s, rel=0.01)


def test_a3mega_times_in_seconds_and_devices():
    (run,) = nccl_tests.read(DATA / "a3mega-2x8-h100-tcpxo.txt")
    assert run.rows[0].time_s == pytest.approx(135.8e-6) and run.rows[0].in_place_time_s == pytest.approx(123.5e-6)
    assert run.hosts == ("ztan-mig-235z", "ztan-mig-gq73") and run.devices == ("NVIDIA H100 80GB HBM3",)


# nccl-tests before 2.x printed no Group, no root column, and a max-error float instead of #wrong
# (NVIDIA/nccl issue 318, p3dn.24xlarge, one node of 8 V100; first rows only).
OLD = """# nThread 1 nGpus 8 minBytes 8 maxBytes 4294967296 step: 2(factor) warmup iters: 5 iters: 20 validation: 1
#
# Using devices
""" + "".join(f"#   Rank  {r} Pid  23638 on ip-10-0-26-117 device  {r} [0x00] Tesla V100-SXM2-32GB\n"
          for r in range(8)) + """#
#                                                     out-of-place                       in-place
#       size         count    type   redop     time   algbw   busbw  error     time   algbw   busbw  error
#        (B)    (elements)                     (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
           8             2   float     sum    59.98    0.00    0.00  2e-07    56.81    0.00    0.00  1e-07
"""

# A broadcast-style root column and N/A errors (no validation), as in NVIDIA/nccl-tests issue 82's output.
NA = OLD.replace("  2e-07", "    N/A").replace("  1e-07", "    N/A")


def test_old_header_without_group_and_root():
    (run,) = nccl_tests.parse("# Collective test starting: all_reduce_perf\n" + OLD)
    assert (run.nodes, run.gpus_per_node, run.collective) == (1, 8, "all_reduce")
    assert run.rows[0].time_s == pytest.approx(59.98e-6) and run.avg_busbw_gbytes_s is None


def test_na_error_column():
    (run,) = nccl_tests.parse("# Collective test starting: all_reduce_perf\n" + NA)
    assert run.rows[0].in_place_time_s == pytest.approx(56.81e-6)


def test_several_runs_in_one_file_and_log_noise():
    text = (DATA / "alps-2x4-gh200-ofi.txt").read_text() + "\nsome launcher line\n" + \
        (DATA / "alps-2x1-gh200-ofi.txt").read_text()
    runs = nccl_tests.parse(text)
    assert [(r.nodes, r.gpus_per_node, len(r.rows)) for r in runs] == [(2, 4, 25), (2, 1, 8)]


def _as_all_gather(line: str) -> str:
    """A row of the 2-rank all-reduce as all-gather prints it: redop none, busbw = algbw / 2."""
    words = line.split()
    if len(words) != 13 or not words[0].isdigit():
        return line
    words[3] = "none"
    words[7] = f"{float(words[6]) / 2:.2f}"
    words[11] = f"{float(words[10]) / 2:.2f}"
    return "  ".join(words)


def test_open_mpi_tag_output_prefix():
    text = "".join(f"[1,0]<stdout>:{line}\n" for line in (DATA / "alps-2x1-gh200-ofi.txt").read_text().splitlines())
    (run,) = nccl_tests.parse(text)
    assert (run.nodes, len(run.rows), run.avg_busbw_gbytes_s) == (2, 8, 14.9966)


def test_all_gather_is_told_from_the_ratio_and_redop():
    lines = (DATA / "alps-2x1-gh200-ofi.txt").read_text().splitlines()
    text = "\n".join(_as_all_gather(line) for line in lines if "Collective test" not in line)
    (run,) = nccl_tests.parse(text)
    assert run.collective == "all_gather" and run.rows[-1].busbw_gbytes_s == pytest.approx(11.43)


@pytest.mark.parametrize("text, what", [
    ("hello\n", "not nccl-tests output"),
    (OLD, "cannot tell which collective"),
    ("\n".join(line for line in OLD.splitlines() if "Rank" not in line), "no '#  Rank"),
    (OLD.replace("Rank  1 ", "Rank  0 "), "rank 0 is listed twice"),
    (OLD.replace("#   Rank  0 Pid", "# Rank  9 Pid"), "are not 0..7"),
    (OLD.replace("on ip-10-0-26-117 device  7", "on other-host device  7"), "different numbers of GPUs"),
    ("\n".join(OLD.splitlines()[:-1]) + "\n", "no result rows"),
])
def test_bad_files_name_what_is_missing(tmp_path, text, what):
    path = tmp_path / "out.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        nccl_tests.read(path)
    assert what in str(err.value) and str(path) in str(err.value)
