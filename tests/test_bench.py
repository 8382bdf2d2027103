"""The convergence benchmark at CI size: structure of the results, figures, robust claims."""

import json

import pytest

from zipml.host import bench


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, bench.run_convergence(out, quick=True, seed=0, command="pytest quick bench",
                                      log=lambda msg: None)


def test_keys_and_json(quick):
    _, results = quick
    assert tuple(results) == bench.RESULT_KEYS
    assert tuple(results["claims"]) == bench.CLAIM_KEYS
    for key in ("command", "commit", "date", "call", "seconds"):
        assert results["meta"][key] not in (None, "")
    assert {s.name for s in bench.QUICK_SETUPS} == set(results["datasets"])
    for d in results["datasets"].values():
        for scheme in ("float64", "raw"):
            assert len(d["curves"][scheme]) == d["epochs"] + 1
        for scheme in ("nearest", "naive", "double"):
            assert set(d["final"][scheme]) == {str(b) for b in d["bits"]}
    assert {"B1", "B16"} <= set(results["golden_epoch_time"])
    json.dumps(results)  # destined for results/bench.json


def test_figures_written(quick):
    out, results = quick
    assert set(results["figures"]) >= set(results["datasets"])
    for name in results["figures"].values():
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000


def test_pair_and_compact_give_identical_models(quick):
    _, results = quick
    assert results["claims"]["pair_equals_compact"]["all"]


def test_double_sampling_beats_naive_on_least_squares(quick):
    """The paper's bias claim at low precision: closer to the optimum and a lower loss."""
    _, results = quick
    rows = results["claims"]["bias_naive_vs_double"]["synthetic10"]
    for b in ("1", "2"):
        assert rows[b]["loss_gap_double"] < rows[b]["loss_gap_naive"]
        assert rows[b]["dist_double"] < rows[b]["dist_naive"]


def test_raw_device_tracks_float64(quick):
    _, results = quick
    for d in results["datasets"].values():
        assert d["final"]["raw"] == pytest.approx(d["final"]["float64"], rel=0.02)


def test_results_md_section(quick, tmp_path):
    _, results = quick
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nother sections stay\n")
    bench.write_results_md(results, path)
    bench.write_results_md(results, path)  # replaces its own section, never duplicates it
    text = path.read_text()
    assert "other sections stay" in text
    assert text.count("## Convergence") == 1
    assert results["meta"]["commit"] in text
    assert "1.7x" in text
