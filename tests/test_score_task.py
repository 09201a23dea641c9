"""The score tasks' specs, in this process and without a framework: the judge against SciPy and
against fresh data, the bars, the Langevin plan every engine follows, the options on the command
line, and score-digits' bar against the digit judge's reference."""

import math

import numpy as np
import pytest

from customfit.data import toy_clusters
from customfit.runs.results import meets
from customfit.tasks import digit_judge
from customfit.tasks.score import judge, layout, spec
from customfit.tasks.score_digits import spec as digits_spec

from test_cli import assert_usage_error, customfit

RUN = ["run", "score", "--engine", "torch", "--out", "out"]


def _fresh(n, seed):
    return toy_clusters(n=n, sample_seed=seed)[0]


# ---------------------------------------------------------------- the judge


def test_energy_distance_is_scipys_squared_in_one_dimension():
    from scipy.stats import energy_distance

    rng = np.random.default_rng(0)
    u, v = rng.normal(size=300), rng.normal(1.0, 2.0, size=400)
    flat = lambda a: np.stack([a, np.zeros_like(a)], axis=1)  # noqa: E731
    assert judge.energy_distance(flat(u), flat(v)) == pytest.approx(
        energy_distance(u, v) ** 2, rel=1e-10
    )
    assert judge.energy_distance(flat(u), flat(u)) == pytest.approx(0.0, abs=1e-12)


def test_fresh_data_clear_the_bars_and_sit_on_the_floor():
    data = _fresh(2000, 7)
    metrics = judge.judge(data)
    assert 0.0 < metrics["energy_distance"] < 0.006
    assert 0.0 < metrics["data_energy_distance"] < 0.006
    assert metrics["within_3sigma"] == pytest.approx(1 - math.exp(-4.5), abs=0.006)
    assert sum(metrics["cluster_shares"]) == pytest.approx(1.0)
    assert 0.18 < metrics["cluster_share_min"] <= metrics["cluster_share_max"] < 0.22
    assert metrics["nonfinite_samples"] == 0
    outputs = {"samples": data, "samples_10x": _fresh(2000, 8)}
    for method in layout.METHODS:
        figures = spec.judge(outputs, None, {"method": method, "sampling_steps": 5})
        assert meets(figures, spec.bars({"method": method})), (method, figures)
        assert figures["sampling_steps_10x"] == 50


def _skewed(counts):
    x, labels, _ = toy_clusters(n=4000, sample_seed=9)
    return x[np.concatenate([np.flatnonzero(labels == k)[:n] for k, n in enumerate(counts)])]


def test_wrong_cluster_weights_fail_and_the_lecture_bar_is_looser():
    # Clusters 0 and 1 at 28% and 12%, the others at 20%: every point still in a cluster.
    skewed = _skewed((560, 240, 400, 400, 400))
    metrics = judge.judge(skewed)
    assert metrics["within_3sigma"] > 0.98
    assert metrics["cluster_share_min"] == pytest.approx(0.12, abs=0.005)  # 1 and 2 are close
    assert metrics["cluster_share_max"] == pytest.approx(0.28, abs=0.005)
    assert 0.02 < metrics["energy_distance"] < 0.05
    outputs = {"samples": skewed, "samples_10x": skewed}
    assert not meets(
        spec.judge(outputs, None, {"method": "dsm", "sampling_steps": 1}),
        spec.bars({"method": "dsm"}),
    )
    assert meets(
        spec.judge(outputs, None, {"method": "lecture", "sampling_steps": 1}),
        spec.bars({"method": "lecture"}),
    )
    # 15% and 25%: the energy distance alone would pass; the share bar holds the line.
    nearly = judge.judge(_skewed((300, 500, 400, 400, 400)))
    assert nearly["energy_distance"] < 0.02 and nearly["cluster_share_max"] > 0.25
    # 35, 35, 10, 10, 10: the lecture's long runs look like this, and fail its bar too.
    assert judge.judge(_skewed((700, 700, 200, 200, 200)))["energy_distance"] > 0.15


def test_a_gaussian_blob_is_far_and_mostly_outside():
    blob = np.random.default_rng(3).normal(0.0, 1.7, size=(2000, 2))
    metrics = judge.judge(blob)
    assert metrics["energy_distance"] > 0.15 and metrics["within_3sigma"] < 0.3


def test_samples_that_blew_up_fail_the_judge_not_the_run():
    data = _fresh(500, 4)
    data[:5] = np.nan
    data[5] = [np.inf, 0.0]
    metrics = judge.judge(data)
    assert math.isnan(metrics["energy_distance"]) and metrics["nonfinite_samples"] == 6
    assert sum(metrics["cluster_shares"]) == pytest.approx(494 / 500)
    assert not meets(
        spec.judge(
            {"samples": data, "samples_10x": data}, None, {"method": "lecture", "sampling_steps": 1}
        ),
        spec.bars({"method": "lecture"}),
    )
    with pytest.raises(ValueError, match=r"expected an \(n, 2\) array"):
        judge.judge(np.zeros((10, 3)))


def test_the_bars_are_the_issues():
    dsm = spec.bars({"method": "dsm"})
    for suffix in ("", "_10x"):
        assert dsm[f"energy_distance{suffix}"] == ("<=", 0.02)
        assert dsm[f"within_3sigma{suffix}"] == 0.95
        assert dsm[f"cluster_share_min{suffix}"] == 0.15
        assert dsm[f"cluster_share_max{suffix}"] == ("<=", 0.25)
    assert spec.bars({"method": "lecture"}) == {"energy_distance": ("<=", 0.15)}
    assert spec.LONGER == 10


# ---------------------------------------------------------------- the sampler's plan


def test_noise_levels_are_geometric_and_steps_scale_with_them():
    sigmas = layout.noise_levels(4.0, 0.05, 20)
    assert sigmas.dtype == np.float32 and len(sigmas) == 20
    assert sigmas[0] == pytest.approx(4.0) and sigmas[-1] == pytest.approx(0.05)
    ratios = sigmas[1:] / sigmas[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)
    plan = layout.langevin_plan("dsm", 7, 0.2, sigmas)
    assert [(level, count) for level, _, count in plan] == [(i, 7) for i in range(20)]
    assert [eps for _, eps, _ in plan] == pytest.approx([0.2 * float(s) ** 2 for s in sigmas])
    assert layout.langevin_plan("lecture", 50, 0.01) == [(None, 0.01, 50)]


def test_segments_cut_the_plan_where_frames_are_kept():
    plan = [(0, 1.0, 3), (1, 0.5, 3)]
    assert layout.segments(plan, [1, 3, 5]) == [
        (0, 1.0, 1, True),
        (0, 1.0, 2, True),
        (1, 0.5, 2, True),
        (1, 0.5, 1, False),
    ]
    assert layout.segments(plan, []) == [(0, 1.0, 3, False), (1, 0.5, 3, False)]
    assert sum(count for _, _, count, _ in layout.segments(plan, [2, 4, 6])) == 6


def test_the_animation_shows_at_most_50_frames_ending_on_the_last_step():
    assert spec.frame_steps(50) == list(range(1, 51))
    steps = spec.frame_steps(400)
    assert len(steps) == 50 and steps[-1] == 400 and steps == sorted(set(steps))
    labels = spec.frame_labels(
        [1, 20, 21, 400],
        {
            "method": "dsm",
            "sampling_steps": 20,
            "noise_levels": 20,
            "sigma_max": 4.0,
            "sigma_min": 0.05,
        },
    )
    assert labels[0] == "step 1 of 400, level 1/20 (sigma 4)"
    assert labels[1].startswith("step 20 of 400, level 1/20") and "level 2/20" in labels[2]
    assert labels[3] == "step 400 of 400, level 20/20 (sigma 0.05)"


def test_cosine_decay_runs_from_one_to_zero():
    assert layout.cosine_decay(0, 100) == 1.0
    assert layout.cosine_decay(50, 100) == pytest.approx(0.5)
    assert layout.cosine_decay(100, 100) == pytest.approx(0.0) == layout.cosine_decay(150, 100)
    assert layout.cosine_decay(37, None) == 1.0


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            ["--method", "dsm", "--divergence", "exact"],
            "--divergence: expected no value with --method dsm (denoising score matching takes no "
            "divergence); got 'exact'",
        ),
        (
            ["--method", "lecture", "--noise-levels", "5"],
            "--noise-levels: expected no value with --method lecture (a dsm option); got 5",
        ),
        (
            ["--sigma-min", "5", "--sigma-max", "1"],
            "--sigma-min: expected a number below --sigma-max (1); got 5.0",
        ),
        (["--method", "ncsn"], "--method: expected one of dsm, lecture; got 'ncsn'"),
        (["--samples", "5"], "--samples: expected an integer >= 10 and <= 100000; got '5'"),
        (["--step-size", "0"], "--step-size: expected a number > 0 and <= 10; got '0'"),
    ],
)
def test_bad_options_are_one_line(flags, expected, tmp_path):
    assert_usage_error(RUN + flags, str(tmp_path), expected)


def test_score_digits_takes_no_method(tmp_path):
    assert_usage_error(
        ["run", "score-digits", "--engine", "torch", "--out", "out", "--method", "lecture"],
        str(tmp_path),
        "an option of task score-digits",
    )


def test_list_shows_the_methods_options_and_bars(tmp_path):
    proc = customfit("list", cwd=tmp_path)
    assert proc.returncode == 0
    for line in (
        "--method dsm|lecture, default dsm",
        "--divergence exact|hutchinson, default exact for --method lecture",
        "--sampling-steps int in [1, 100000], default 50 for --method lecture, 20 for --method dsm",
        "bar (--method dsm): energy_distance <= 0.02, within_3sigma >= 0.95, "
        "cluster_share_min >= 0.15, cluster_share_max <= 0.25, energy_distance_10x <= 0.02",
        "bar (--method lecture): energy_distance <= 0.15",
        "score-digits",
        "bar: fd <= 7.32",
        spec.JUDGE,
        digits_spec.JUDGE,
    ):
        assert line in proc.stdout, line


def test_score_digits_bar_is_the_pixel_gaussian_reference():
    reference = digit_judge.references()["pixel_gaussian"]["fd"]
    assert digits_spec.PIXEL_GAUSSIAN_FD <= reference < digits_spec.PIXEL_GAUSSIAN_FD + 0.01
    assert digits_spec.bars({}) == {"fd": ("<=", digits_spec.PIXEL_GAUSSIAN_FD)}
    split = digits_spec.load()
    assert split.x_train.shape == (1437, 64) and split.y_train is None


@pytest.mark.parametrize(
    "config, epochs",
    [({}, 1600), ({"method": "lecture"}, 800), ({"method": "dsm", "epochs": 5}, 5)],
)
def test_each_method_trains_its_own_default_length(config, epochs, tmp_path):
    """dsm trains 1600 epochs unless told (its cluster shares after long Langevin runs need the
    better-trained score; spec.py's docstring), the lecture's method 800."""
    from customfit import report
    from customfit.runs import plan as planning

    plan = planning.build("score", "torch", {**config, "out": str(tmp_path / "out")})
    assert plan.settings["epochs"] == epochs
    method = config.get("method", "dsm")
    run = {"task": "score", "config": {"method": method, "epochs": 1000}}
    assert report.short_run(run) == ("short run: 1000 of 1600 epochs" if method == "dsm" else None)
