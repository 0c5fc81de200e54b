"""The anchor study's own logic: snapshots read as WavJEPA's network, the peer's loss at a
step, and the per-budget summary (gains over each run's own init, seed spread, health)."""

import json
import os

import numpy as np
import pytest

from configs import quickstart
from research import anchor_compare, anchor_learning
from wavlejepa import model, wavjepa_weights

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "wavjepa_tiny.npz")


def test_a_snapshot_is_probed_as_wavjepas_own_network(tmp_path):
    with np.load(FIXTURE) as z:
        state = {k.removeprefix("state_dict/"): z[k] for k in z.files if k.startswith("state_")}
        audio, want = z["audio_normalised"], z["embeddings"]
    path = tmp_path / "step_000250.npz"
    np.savez(path, __step__=250, **state)
    params, config = anchor_learning.encoder(str(path), quickstart.get_config())
    assert {
        k: config.model[k] for k in wavjepa_weights.WAVJEPA_FORM
    } == wavjepa_weights.WAVJEPA_FORM
    assert config.dataset.crop_seconds == quickstart.get_config().dataset.crop_seconds
    np.testing.assert_allclose(model.embed(params, audio[None], config.model)[0], want, atol=2e-5)


def test_the_peer_loss_is_the_mean_of_the_steps_before(tmp_path):
    (tmp_path / "peer.json").write_text(json.dumps({"losses": list(range(1, 101))}))
    got = anchor_learning.peer_loss(str(tmp_path), 50)
    assert got["invariance"] == pytest.approx(np.mean(range(26, 51)))  # Steps 26..50.
    assert anchor_learning.peer_loss(str(tmp_path), 0)["invariance"] is None


def _row(digits, digits_ms, heldout, **health):
    row = {
        "digits": digits,
        "digits_mean_std": digits_ms,
        "heldout_digits": heldout,
        "heldout_digits_mean_std": heldout - 0.1,
        "speakers": 0.5,
        "speakers_mean_std": 0.5,
    }
    return row | {k: health.get(k, 1.0) for k in anchor_compare.HEALTH}  # fmt: skip


def test_gains_are_best_against_best_over_each_seeds_own_init(tmp_path):
    runs = {  # seed: (init row, final row)
        0: (_row(0.40, 0.50, 0.30), _row(0.60, 0.45, 0.32, pooled_spread=0.2)),
        1: (_row(0.42, 0.40, 0.35), _row(0.44, 0.48, 0.30, pooled_spread=0.4)),
    }
    for seed, rows in runs.items():
        path = tmp_path / f"ours_32x0.51s_750steps_seed{seed}.json"
        path.write_text(json.dumps({"steps": list(rows)}))
    (tmp_path / "notes.json").write_text("{}")  # Not a result file: left alone.
    [row] = anchor_compare.summary(anchor_compare.load(str(tmp_path)))
    assert (row["system"], row["steps"], row["seeds"]) == ("ours_32x0.51s", 750, [0, 1])
    # Digits: seed 0 0.60 - 0.50 (mean_std init) = +0.10; seed 1 0.48 - 0.42 = +0.06.
    assert row["digits_gain"] == pytest.approx(0.08)
    assert row["digits_spread"] == pytest.approx(0.04)
    # Unseen speaker (mean pooling better here): +0.02 and -0.05.
    assert row["heldout_digits_gain"] == pytest.approx(-0.015)
    assert row["pooled_spread"] == pytest.approx(0.3) and row["pooled_spread_init"] == 1.0
    table = anchor_compare.markdown([row]).splitlines()
    assert "+0.080 (0.040)" in table[2] and len(table) == 3
    assert table[0].count("|") == table[2].count("|") == 12  # 11 columns: within-clip std too.


def test_a_budget_with_one_seed_shows_no_spread(tmp_path):
    rows = (_row(0.40, 0.50, 0.30), _row(0.60, 0.45, 0.32))
    (tmp_path / "ours_8x2.01s_3000steps_seed0.json").write_text(json.dumps({"steps": rows}))
    [row] = anchor_compare.summary(anchor_compare.load(str(tmp_path)))
    assert "+0.100 (one seed)" in anchor_compare.markdown([row]).splitlines()[2]


def test_two_folders_and_a_system_filter(tmp_path):
    rows = {"steps": [_row(0.40, 0.50, 0.30), _row(0.60, 0.45, 0.32)]}
    (tmp_path / "study").mkdir()
    (tmp_path / "variants").mkdir()
    for name in ("study/ours_32x0.51s", "study/ours_8x2.01s", "variants/ours_identity_32x0.51s"):
        (tmp_path / f"{name}_750steps_seed0.json").write_text(json.dumps(rows))
    folders = str(tmp_path / "variants"), str(tmp_path / "study")
    runs = anchor_compare.load(*folders, systems=r"^ours_32x0\.51s$|^ours_identity")
    assert sorted(runs) == [("ours_32x0.51s", 750), ("ours_identity_32x0.51s", 750)]
    assert len(anchor_compare.load(*folders)) == 3


def test_the_figure_has_both_gains_the_spread_on_a_log_axis_and_the_rank(tmp_path):
    rows = {"steps": [_row(0.40, 0.50, 0.30), _row(0.60, 0.45, 0.32, pooled_spread=0.002)]}
    (tmp_path / "ours_32x0.51s_750steps_seed0.json").write_text(json.dumps(rows))
    (tmp_path / "ours_32x0.51s_3000steps_seed0.json").write_text(json.dumps(rows))
    figure = anchor_compare.curves(anchor_compare.summary(anchor_compare.load(str(tmp_path))))
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0].startswith("unseen") and titles[1].startswith("digits")
    assert figure.axes[2].get_yscale() == "log" and "rank" in titles[3]
    np.testing.assert_allclose(np.asarray(figure.axes[2].lines[0].get_ydata(), float), [0.002] * 2)
    for ax in figure.axes:  # The budgets label the x axis, and nothing else does.
        assert [t.get_text() for t in ax.get_xticklabels()] == ["750", "3,000"]
        assert not ax.get_xticklabels(minor=True)
