"""The host preparation speed figures and their command line (``python -m zipml.host.perf``)."""

import json

from zipml.host import perf


def test_host_prep_speed_keys_and_every_format(capsys):
    figures = perf.host_prep_speed(rows=40, features=7, repeats=1)
    assert list(figures) == ["pair b=4", "compact b=2", "raw"]
    for f in figures.values():
        assert {"encode_features_per_s", "pack_features_per_s",
                "prepare_features_per_s"} <= set(f)
        assert all(f[k] > 0 for k in f)
    assert perf.main(["--prep", "--all", "--rows", "30", "--features", "5", "--repeats", "1",
                      "--json"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert len(every) == len(perf.prep_formats()) == 1 + 3 * (8 * 2 + 7)
    assert {"raw", "single b=1 unsigned", "compact b=8 table"} <= set(every)
    assert perf.main(["--prep", "--rows", "30", "--features", "5", "--repeats", "1"]) == 0
    assert "pair b=4" in capsys.readouterr().out
