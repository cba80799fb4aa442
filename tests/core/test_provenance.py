"""[cluster.provenance]: every preset says where each figure it sets comes from; later layers stamp 'given'."""

import pytest

from palsgd.core import presets
from palsgd.core.cluster import figures, provenance_lines
from palsgd.core.config import load, with_changes
from palsgd.core.errors import ConfigError


def _set_in(table: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in table.items():
        if isinstance(value, dict):
            out |= _set_in(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


@pytest.mark.parametrize("name", presets.names("cluster"))
def test_every_preset_figure_has_a_provenance(name):
    table = dict(presets.read("cluster", name)["cluster"])
    stated = table.pop("provenance")
    set_here = _set_in(table) & set(figures())
    assert set_here <= set(stated), sorted(set_here - set(stated))
    assert load(cluster=name).cluster.provenance == stated  # nothing set later: kept as the file says


def test_eth10_efficiency_is_marked_an_assumption():
    prov = load(cluster="a100-8x1-eth10").cluster.provenance
    assert prov["transport.efficiency"].startswith("assumed:")
    assert prov["compute.peak_tflops"].startswith("published:")


def test_later_layers_stamp_given(tmp_path):
    exp_file = tmp_path / "exp.toml"
    exp_file.write_text('[cluster]\npreset = "a100-4x8-ib100"\nnodes = 2\n')
    exp = load(exp_file, overrides=["cluster.inter_node.bandwidth_gbps=25"])
    prov = exp.cluster.provenance
    assert prov["nodes"] == f"given: {exp_file}"
    assert prov["inter_node.bandwidth_gbps"] == "given: --set"
    assert prov["inter_node.latency_us"].startswith("published:")
    swept = with_changes(exp, [("--vary", {"cluster": {"transport": {"efficiency": 0.5}}})]).cluster.provenance
    assert swept["transport.efficiency"] == "given: --vary" and swept["nodes"] == f"given: {exp_file}"
    lines = provenance_lines(swept)
    assert lines[0].startswith("published:") and lines[-1].startswith("given:")


@pytest.mark.parametrize("table, what", [
    ('"inter_node.bandwith_gbps" = "measured: x"', "must name a cluster figure"),
    ('nodes = "guessed: x"', "must start with one of"),
])
def test_bad_provenance_is_config_error(tmp_path, table, what):
    path = tmp_path / "c.toml"
    path.write_text(f'[cluster]\nnodes = 2\n[cluster.provenance]\n{table}\n')
    with pytest.raises(ConfigError, match=what):
        load(cluster=str(path))
