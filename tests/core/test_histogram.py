"""Tests for fairchem_categorical.histogram: support geometry, encodings, decoders, checkpoints.

Every expected number here comes from the method's definition (numpy / scipy / closed
forms), never from running the code under test.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from fairchem_categorical.histogram import (
    HistogramSupport,
    SupportMismatchError,
    SupportSpec,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ENCODINGS = ("hl_gauss", "two_hot", "one_hot")


def np_edges(low: float, high: float, k: int) -> np.ndarray:
    return np.linspace(low, high, k + 1, dtype=np.float64)


def np_centers(low: float, high: float, k: int) -> np.ndarray:
    e = np_edges(low, high, k)
    return (e[1:] + e[:-1]) / 2.0


def logits_of(p: np.ndarray) -> torch.Tensor:
    """Logits whose softmax is ``p``; zero-probability bins get a very negative (finite) logit."""
    p = np.asarray(p, dtype=np.float64)
    out = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), -1e4)
    return torch.tensor(out, dtype=torch.float32)


# -- import hygiene -------------------------------------------------------------------


def test_core_modules_do_not_import_fairchem(tmp_path: Path) -> None:
    # A stub ``fairchem`` package shadows any installed one, so even an import wrapped
    # in try/except would leave a trace in sys.modules; an unguarded ``fairchem.core``
    # import would crash the subprocess.
    stub = tmp_path / "fairchem"
    stub.mkdir()
    (stub / "__init__.py").write_text("")
    code = textwrap.dedent(
        """
        import json, sys
        import fairchem_categorical.histogram
        import fairchem_categorical.losses
        import fairchem_categorical.targets
        bad = sorted(m for m in sys.modules if m == "fairchem" or m.startswith("fairchem."))
        print(json.dumps(bad))
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO_ROOT)])
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# -- geometry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "low, high, k",
    [(-3.0, 5.0, 8), (0.0, 1.0, 2), (-10.5, 7.25, 128), (100.0, 101.0, 37), (-1.0, 2.0, 3)],
)
def test_centers_are_midpoints_of_edges(low: float, high: float, k: int) -> None:
    s = HistogramSupport(low, high, num_bins=k)
    tol = 1e-6 * max(1.0, abs(low), abs(high))
    np.testing.assert_allclose(s.edges.numpy(), np_edges(low, high, k), rtol=0, atol=tol)
    np.testing.assert_allclose(s.centers.numpy(), np_centers(low, high, k), rtol=0, atol=tol)
    assert s.edges.shape == (k + 1,)
    assert s.centers.shape == (k,)
    assert s.width == pytest.approx((high - low) / k, rel=1e-12)
    # The first center is half a bin above low, the last half a bin below high
    # (a one-bin-low shift would put centers[0] at low - width/2).
    w = (high - low) / k
    assert float(s.centers[0]) == pytest.approx(low + w / 2, abs=tol)
    assert float(s.centers[-1]) == pytest.approx(high - w / 2, abs=tol)
    assert bool((s.centers > s.edges[:-1]).all()) and bool((s.centers < s.edges[1:]).all())


def test_sigma_defaults_to_ratio_of_width_and_accepts_absolute() -> None:
    s = HistogramSupport(-2.0, 6.0, num_bins=16)  # width 0.5
    assert s.sigma == pytest.approx(0.75 * 0.5)
    assert HistogramSupport(-2.0, 6.0, 16, sigma_ratio=2.0).sigma == pytest.approx(1.0)
    assert HistogramSupport(-2.0, 6.0, 16, sigma=0.3).sigma == pytest.approx(0.3)


# -- encodings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"sigma": 0.3}, {"sigma_ratio": 2.0}, {"sigma_ratio": 0.4}],
    ids=["default", "abs_sigma", "wide", "narrow"],
)
def test_hl_gauss_normalised_and_mean_recovers_target(kwargs: dict) -> None:
    low, high, k = -4.0, 4.0, 64
    s = HistogramSupport(low, high, k, encoding="hl_gauss", **kwargs)
    sig = kwargs.get("sigma", kwargs.get("sigma_ratio", 0.75) * (high - low) / k)
    ys = torch.linspace(low + 4 * sig, high - 4 * sig, 97)
    p = s.encode(ys)
    assert p.shape == (97, k) and p.dtype == torch.float32
    assert bool((p >= 0).all())
    torch.testing.assert_close(p.sum(-1), torch.ones(97), atol=1e-5, rtol=0)
    mean = (p.double() * torch.tensor(np_centers(low, high, k))).sum(-1)
    err = (mean - ys.double()).abs().max().item()
    assert err <= 0.05 * s.width, f"max |mean - y| = {err} > 0.05 * width"
    # The decoder applied to log-probabilities gives the same expectation.
    torch.testing.assert_close(s.mean(torch.log(p.clamp_min(1e-30))).double(), ys.double(),
                               atol=0.05 * s.width, rtol=0)


@pytest.mark.parametrize(
    "y, kwargs",
    [(0.37, {"sigma": 0.4}), (2.9, {"sigma": 0.4}), (-1.23, {}), (-2.0, {"sigma_ratio": 1.5})],
)
def test_hl_gauss_matches_scipy_truncated_normal(y: float, kwargs: dict) -> None:
    low, high, k = -2.0, 3.0, 20
    s = HistogramSupport(low, high, k, encoding="hl_gauss", **kwargs)
    sigma = kwargs.get("sigma", kwargs.get("sigma_ratio", 0.75) * (high - low) / k)
    cdf = norm.cdf(np_edges(low, high, k), loc=y, scale=sigma)
    expected = np.diff(cdf) / (cdf[-1] - cdf[0])
    got = s.encode(torch.tensor(y)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_two_hot_is_mean_preserving_and_adjacent() -> None:
    low, high, k = -3.0, 5.0, 16
    s = HistogramSupport(low, high, k, encoding="two_hot")
    c = np_centers(low, high, k)
    rng = np.random.default_rng(0)
    ys = np.concatenate([
        [c[0], c[-1], c[3], (c[3] + c[4]) / 2, c[5] + 0.1 * (c[6] - c[5])],
        rng.uniform(c[0], c[-1], size=200),
    ])
    p = s.encode(torch.tensor(ys, dtype=torch.float32))
    assert bool((p >= 0).all())
    torch.testing.assert_close(p.sum(-1), torch.ones(len(ys)), atol=1e-6, rtol=0)
    mean = (p.double() * torch.tensor(c)).sum(-1).numpy()
    np.testing.assert_allclose(mean, ys.astype(np.float32), rtol=0, atol=1e-5)
    for row in p:
        nz = torch.nonzero(row > 0).flatten().tolist()
        assert 1 <= len(nz) <= 2
        if len(nz) == 2:
            assert nz[1] - nz[0] == 1
    # Hand-checked splits: exactly on a center, halfway, and 10% of the way.
    assert float(p[2, 3]) == pytest.approx(1.0, abs=1e-6)
    assert float(p[3, 3]) == pytest.approx(0.5, abs=1e-6)
    assert float(p[3, 4]) == pytest.approx(0.5, abs=1e-6)
    assert float(p[4, 5]) == pytest.approx(0.9, abs=1e-5)
    assert float(p[4, 6]) == pytest.approx(0.1, abs=1e-5)
    assert float(p[0, 0]) == pytest.approx(1.0, abs=1e-6)
    assert float(p[1, -1]) == pytest.approx(1.0, abs=1e-6)


def test_one_hot_argmax_bin_contains_target() -> None:
    low, high, k = -1.5, 2.5, 10
    s = HistogramSupport(low, high, k, encoding="one_hot")
    edges = np_edges(low, high, k)
    ys = np.concatenate([np.random.default_rng(1).uniform(low, high, 300),
                         [low, high, 0.1, 0.5 * (edges[3] + edges[4])]]).astype(np.float32)
    p = s.encode(torch.tensor(ys))
    assert torch.equal(p.sum(-1), torch.ones(len(ys)))
    assert torch.equal((p == 1).sum(-1), torch.ones(len(ys), dtype=torch.long))
    idx = p.argmax(-1).numpy()
    y64 = ys.astype(np.float64)
    assert np.all(edges[idx] <= y64 + 1e-6)
    assert np.all(y64 <= edges[idx + 1] + 1e-6)
    # 0.1 lies in bin floor((0.1 + 1.5) / 0.4) = 4; y == high belongs to the last bin.
    assert idx[-2] == 4
    assert idx[-3] == k - 1 and idx[-4] == 0
    assert idx[-1] == 3


def test_encode_override_encoding_argument() -> None:
    s = HistogramSupport(0.0, 4.0, 4, encoding="hl_gauss")
    p = s.encode(torch.tensor([1.5]), encoding="two_hot")  # centers 0.5,1.5,2.5,3.5
    torch.testing.assert_close(p, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="encoding"):
        s.encode(torch.tensor([1.0]), encoding="gaussian")


# -- clamping and non-finite targets ---------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_out_of_range_targets_clamp_to_edge_and_are_counted(encoding: str) -> None:
    low, high = -1.0, 1.0
    s = HistogramSupport(low, high, 16, encoding=encoding)
    y = torch.tensor([high, 1.5, 7.0, 1e30, low, -3.0, 0.2])
    assert s.count_outside(y) == 4
    p = s.encode(y)
    assert torch.isfinite(p).all()
    for i in (1, 2, 3):
        torch.testing.assert_close(p[i], p[0], atol=0, rtol=0)
    torch.testing.assert_close(p[5], p[4], atol=0, rtol=0)
    assert not torch.equal(p[6], p[0])
    # encoding keeps no hidden state: the same targets encode the same way again
    torch.testing.assert_close(s.encode(y), p, atol=0, rtol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_targets_raise(bad: float) -> None:
    s = HistogramSupport(-1.0, 1.0, 8)
    with pytest.raises(ValueError, match="non-finite"):
        s.encode(torch.tensor([0.0, bad, 0.5]))
    with pytest.raises(ValueError):
        s.encode(torch.tensor(bad))


# -- decoders -------------------------------------------------------------------------


def test_entropy_extremes_and_normalisation() -> None:
    k = 16
    s = HistogramSupport(-1.0, 1.0, k)
    one_hot = torch.zeros(k)
    one_hot[5] = 60.0
    assert float(s.entropy(one_hot)) == pytest.approx(0.0, abs=1e-6)
    assert float(s.normalized_entropy(one_hot)) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(k)
    assert float(s.entropy(uniform)) == pytest.approx(math.log(k), abs=1e-5)
    assert float(s.normalized_entropy(uniform)) == pytest.approx(1.0, abs=1e-6)
    # A two-point distribution in nats.
    p = np.zeros(k)
    p[[2, 9]] = [0.25, 0.75]
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert float(s.entropy(logits_of(p))) == pytest.approx(expected, abs=1e-5)


def test_std_of_two_point_distribution_in_support_units() -> None:
    k = 10
    p = np.zeros(k)
    p[1], p[6] = 0.25, 0.75
    logits = logits_of(p)
    s = HistogramSupport(0.0, 10.0, k)  # centers 0.5, 1.5, ..., 9.5
    # mean = 0.25 * 1.5 + 0.75 * 6.5 = 5.25; var = 0.25 * 0.75 * (6.5 - 1.5)^2
    assert float(s.mean(logits)) == pytest.approx(5.25, abs=1e-5)
    assert float(s.std(logits)) == pytest.approx(5.0 * math.sqrt(0.25 * 0.75), abs=1e-5)
    # Same logits on a support twice as wide: std doubles; shifted support: std unchanged.
    wide = HistogramSupport(0.0, 20.0, k)
    shifted = HistogramSupport(-5.0, 5.0, k)
    assert float(wide.std(logits)) == pytest.approx(10.0 * math.sqrt(0.1875), abs=1e-5)
    assert float(shifted.std(logits)) == pytest.approx(5.0 * math.sqrt(0.1875), abs=1e-5)
    assert float(shifted.mean(logits)) == pytest.approx(0.25, abs=1e-5)
    assert float(s.mode(logits)) == pytest.approx(6.5)


@pytest.mark.parametrize("low, high, k", [(-3.0, 5.0, 16), (10.0, 24.0, 7), (-1.0, 1.0, 2)])
def test_uniform_median_and_interval(low: float, high: float, k: int) -> None:
    s = HistogramSupport(low, high, k)
    logits = torch.zeros(k)
    r = high - low
    tol = 1e-5 * max(1.0, abs(low), abs(high))
    assert float(s.median(logits)) == pytest.approx((low + high) / 2, abs=tol)
    assert float(s.decode(logits, "median")) == pytest.approx((low + high) / 2, abs=tol)
    lo, hi = s.interval(logits, 0.9)
    assert float(lo) == pytest.approx(low + 0.05 * r, abs=tol)
    assert float(hi) == pytest.approx(high - 0.05 * r, abs=tol)
    for q in (0.01, 0.2, 0.37, 0.8, 0.99):
        assert float(s.quantile(logits, q)) == pytest.approx(low + q * r, abs=tol)


def test_quantile_of_single_bin_mass_interpolates_within_bin() -> None:
    s = HistogramSupport(0.0, 8.0, 8)
    p = np.zeros(8)
    p[3] = 1.0  # all mass uniform on [3, 4]
    logits = logits_of(p)
    assert float(s.median(logits)) == pytest.approx(3.5, abs=1e-5)
    lo, hi = s.interval(logits, 0.8)
    assert float(lo) == pytest.approx(3.1, abs=1e-5)
    assert float(hi) == pytest.approx(3.9, abs=1e-5)


@pytest.mark.parametrize("coverage", [0.5, 0.8, 0.9, 0.95])
def test_interval_coverage_by_monte_carlo(coverage: float) -> None:
    low, high, k = -1.0, 3.0, 32
    s = HistogramSupport(low, high, k)
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(k, generator=gen) * 1.5
    p = torch.softmax(logits.double(), -1).numpy()
    rng = np.random.default_rng(123)
    n = 400_000
    edges = np_edges(low, high, k)
    bins = rng.choice(k, size=n, p=p / p.sum())
    x = edges[bins] + rng.uniform(0.0, 1.0, size=n) * (edges[1] - edges[0])
    lo, hi = (float(v) for v in s.interval(logits, coverage))
    inside = np.mean((x >= lo) & (x <= hi))
    assert abs(inside - coverage) < 0.01
    # The interval is central: each tail holds (1 - coverage) / 2.
    tail = (1 - coverage) / 2
    assert abs(np.mean(x < lo) - tail) < 0.01
    assert abs(np.mean(x > hi) - tail) < 0.01
    assert abs(np.mean(x <= float(s.median(logits))) - 0.5) < 0.01


def test_edge_mass() -> None:
    k = 10
    p = np.full(k, 0.5 / (k - 2))
    p[0], p[-1] = 0.3, 0.2
    s = HistogramSupport(-2.0, 2.0, k)
    assert float(s.edge_mass(logits_of(p))) == pytest.approx(0.5, abs=1e-6)
    assert float(s.edge_mass(torch.zeros(k))) == pytest.approx(2.0 / k, abs=1e-6)


def test_decode_and_summarize() -> None:
    s = HistogramSupport(0.0, 4.0, 4)  # centers 0.5, 1.5, 2.5, 3.5
    p = np.array([0.1, 0.2, 0.6, 0.1])
    logits = logits_of(p)
    assert float(s.decode(logits)) == pytest.approx(0.05 + 0.3 + 1.5 + 0.35, abs=1e-5)
    assert float(s.decode(logits, "mode")) == pytest.approx(2.5)
    # CDF: 0.1, 0.3, 0.9 -> median in bin 2 at 2 + (0.5 - 0.3) / 0.6
    assert float(s.decode(logits, "median")) == pytest.approx(2.0 + 0.2 / 0.6, abs=1e-5)
    with pytest.raises(ValueError, match="decoded value"):
        s.decode(logits, "max")
    out = s.summarize(logits)
    assert set(out) == {"mean", "std", "entropy", "edge_mass"}
    assert float(out["edge_mass"]) == pytest.approx(0.2, abs=1e-6)
    mu = float((p * np.array([0.5, 1.5, 2.5, 3.5])).sum())
    var = float((p * (np.array([0.5, 1.5, 2.5, 3.5]) - mu) ** 2).sum())
    assert float(out["std"]) == pytest.approx(math.sqrt(var), abs=1e-5)
    assert float(out["entropy"]) == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-5)


def test_decoders_reject_wrong_bin_count_and_bad_coverage() -> None:
    s = HistogramSupport(0.0, 1.0, 8)
    with pytest.raises(ValueError, match="bins"):
        s.mean(torch.zeros(3, 7))
    with pytest.raises(ValueError, match="coverage"):
        s.interval(torch.zeros(8), 1.0)
    with pytest.raises(ValueError, match="coverage"):
        s.interval(torch.zeros(8), 0.0)


# -- batching -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encode_batches_over_leading_shape(encoding: str) -> None:
    k = 12
    s = HistogramSupport(-2.0, 2.0, k, encoding=encoding)
    y = torch.tensor([[-1.7, 0.0, 0.33], [1.2, -0.5, 1.9]])
    p = s.encode(y)
    assert p.shape == (2, 3, k)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(p[i, j], s.encode(y[i, j]), atol=1e-7, rtol=0)
    assert s.encode(torch.tensor(0.3)).shape == (k,)
    assert s.encode(torch.zeros(4, 1, 5)).shape == (4, 1, 5, k)


def test_decoders_batch_over_leading_shape() -> None:
    k = 12
    s = HistogramSupport(-2.0, 2.0, k)
    logits = torch.randn(2, 3, k, generator=torch.Generator().manual_seed(3))
    flat = logits.reshape(6, k)
    decoders = {
        "mean": s.mean, "mode": s.mode, "median": s.median, "std": s.std,
        "entropy": s.entropy, "normalized_entropy": s.normalized_entropy,
        "edge_mass": s.edge_mass, "q25": lambda x: s.quantile(x, 0.25),
        "lo": lambda x: s.interval(x, 0.9)[0], "hi": lambda x: s.interval(x, 0.9)[1],
    }
    for name, fn in decoders.items():
        out = fn(logits)
        assert out.shape == (2, 3), name
        rows = torch.stack([fn(flat[i]) for i in range(6)]).reshape(2, 3)
        torch.testing.assert_close(out, rows, atol=1e-6, rtol=0, msg=name)


# -- temperature ----------------------------------------------------------------------


def test_temperature_raises_entropy_and_std_keeps_symmetric_mean() -> None:
    k = 16
    s = HistogramSupport(-2.0, 2.0, k)
    c = torch.tensor(np_centers(-2.0, 2.0, k), dtype=torch.float32)
    logits = -(c**2) / 0.5  # symmetric about 0
    h1, sd1, m1 = float(s.entropy(logits)), float(s.std(logits)), float(s.mean(logits))
    assert m1 == pytest.approx(0.0, abs=1e-6)
    s.temperature.fill_(2.0)
    h2, sd2, m2 = float(s.entropy(logits)), float(s.std(logits)), float(s.mean(logits))
    assert h2 > h1 + 0.1
    assert sd2 > sd1 * 1.1
    assert m2 == pytest.approx(0.0, abs=1e-6)
    # T divides the logits.
    torch.testing.assert_close(s.probs(logits), torch.softmax(logits / 2.0, -1))
    assert float(s.mode(logits)) == float(c[7]) or float(s.mode(logits)) == float(c[8])


# -- invalid supports -----------------------------------------------------------------

INVALID = [
    ({"low": 1.0, "high": 1.0}, "low"),
    ({"low": 2.0, "high": 1.0}, "high"),
    ({"low": 0.0, "high": 1.0, "num_bins": 1}, "num_bins"),
    ({"low": 0.0, "high": 1.0, "num_bins": 0}, "num_bins"),
    ({"low": 0.0, "high": 1.0, "num_bins": -4}, "num_bins"),
    ({"low": 0.0, "high": 1.0, "num_bins": 2.5}, "num_bins"),
    ({"low": 0.0, "high": 1.0, "sigma": 0.0}, "sigma"),
    ({"low": 0.0, "high": 1.0, "sigma": -0.1}, "sigma"),
    ({"low": 0.0, "high": 1.0, "sigma": float("nan")}, "sigma"),
    ({"low": 0.0, "high": 1.0, "sigma_ratio": 0.0}, "sigma_ratio"),
    ({"low": 0.0, "high": 1.0, "sigma_ratio": -1.0}, "sigma_ratio"),
    ({"low": 0.0, "high": 1.0, "sigma_ratio": float("inf")}, "sigma_ratio"),
    ({"low": float("nan"), "high": 1.0}, "low"),
    ({"low": float("-inf"), "high": 1.0}, "low"),
    ({"low": 0.0, "high": float("inf")}, "high"),
    ({"low": 0.0, "high": float("nan")}, "high"),
    ({"low": 0.0, "high": 1.0, "encoding": "gaussian"}, "encoding"),
]


@pytest.mark.parametrize("kwargs, word", INVALID, ids=[f"{w}-{i}" for i, (_, w) in
                                                        enumerate(INVALID)])
@pytest.mark.parametrize("factory", [HistogramSupport, SupportSpec], ids=["module", "spec"])
def test_invalid_support_raises_naming_parameter(factory, kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        factory(**kwargs)


# -- checkpoints ----------------------------------------------------------------------


def test_state_dict_round_trip_reproduces_outputs() -> None:
    a = HistogramSupport(-2.0, 3.0, 24, encoding="hl_gauss", sigma_ratio=1.0)
    a.temperature.fill_(1.7)
    sd = a.state_dict()
    assert sd["_extra_state"]["low"] == -2.0 and sd["_extra_state"]["high"] == 3.0
    assert sd["_extra_state"]["num_bins"] == 24
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    b = HistogramSupport(-2.0, 3.0, 24, encoding="hl_gauss", sigma_ratio=1.0)
    b.load_state_dict(torch.load(buf))
    assert float(b.temperature) == pytest.approx(1.7)
    logits = torch.randn(5, 24, generator=torch.Generator().manual_seed(0))
    for key, value in a.summarize(logits).items():
        torch.testing.assert_close(b.summarize(logits)[key], value, atol=0, rtol=0)
    y = torch.tensor([-1.0, 0.4, 2.5])
    torch.testing.assert_close(b.encode(y), a.encode(y), atol=0, rtol=0)
    c = HistogramSupport.from_spec(sd["_extra_state"])
    c.load_state_dict(sd)
    assert c.spec == a.spec


@pytest.mark.parametrize(
    "other, field",
    [
        ({"low": -1.0, "high": 3.0, "num_bins": 24}, "low"),
        ({"low": -2.0, "high": 4.0, "num_bins": 24}, "high"),
        ({"low": -2.0, "high": 3.0, "num_bins": 32}, "num_bins"),
        ({"low": -2.0, "high": 3.0, "num_bins": 24, "encoding": "two_hot"}, "encoding"),
        ({"low": -2.0, "high": 3.0, "num_bins": 24, "sigma": 0.5}, "sigma"),
    ],
)
def test_state_dict_from_other_support_raises(other: dict, field: str) -> None:
    stored = HistogramSupport(-2.0, 3.0, 24)
    target = HistogramSupport(**other)
    with pytest.raises(SupportMismatchError, match=field) as info:
        target.load_state_dict(stored.state_dict())
    assert isinstance(info.value, ValueError)
    # Only differing fields are named.
    for name in ("low", "high", "num_bins", "encoding"):
        if name != field:
            assert f"{name}:" not in str(info.value)
    # The same check applies when the support sits inside a larger module.
    parent_a = torch.nn.ModuleDict({"support": stored, "lin": torch.nn.Linear(2, 2)})
    parent_b = torch.nn.ModuleDict({"support": target, "lin": torch.nn.Linear(2, 2)})
    with pytest.raises(SupportMismatchError, match=field):
        parent_b.load_state_dict(parent_a.state_dict())


def test_mismatch_names_low_specifically() -> None:
    a = HistogramSupport(0.0, 1.0, 8)
    b = HistogramSupport(0.5, 1.0, 8)
    with pytest.raises(SupportMismatchError) as info:
        b.load_state_dict(a.state_dict())
    msg = str(info.value)
    assert "low" in msg and "0.0" in msg and "0.5" in msg
    assert "high:" not in msg


# -- property tests -------------------------------------------------------------------

lows = st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False)
spans = st.floats(0.1, 200.0, allow_nan=False, allow_infinity=False)
bins = st.integers(2, 256)
fractions = st.floats(-0.5, 1.5, allow_nan=False, allow_infinity=False)
PROPS = settings(max_examples=75, deadline=None)


@PROPS
@given(low=lows, span=spans, k=bins, ts=st.lists(fractions, min_size=1, max_size=8),
       encoding=st.sampled_from(ENCODINGS))
def test_property_encodings_are_probability_vectors(low, span, k, ts, encoding) -> None:
    s = HistogramSupport(low, low + span, k, encoding=encoding)
    y = torch.tensor([low + t * span for t in ts], dtype=torch.float32)
    p = s.encode(y)
    assert p.shape == (len(ts), k)
    assert torch.isfinite(p).all()
    assert bool((p >= 0).all())
    torch.testing.assert_close(p.sum(-1).double(), torch.ones(len(ts), dtype=torch.float64),
                               atol=1e-5, rtol=0)


@PROPS
@given(low=lows, span=spans, k=bins, t=st.floats(0.0, 1.0),
       ratio=st.floats(0.5, 2.0))
def test_property_hl_gauss_mean_near_target(low, span, k, t, ratio) -> None:
    width = span / k
    sigma = ratio * width
    assume(span > 8 * sigma + width)
    y = (low + 4 * sigma) + t * (span - 8 * sigma)
    s = HistogramSupport(low, low + span, k, encoding="hl_gauss", sigma_ratio=ratio)
    p = s.encode(torch.tensor([y], dtype=torch.float32))[0].double()
    mean = float((p * torch.tensor(np_centers(low, low + span, k))).sum())
    assert abs(mean - y) <= 0.5 * width


@PROPS
@given(low=lows, span=spans, k=bins, t=st.floats(0.0, 1.0))
def test_property_two_hot_mean_exact(low, span, k, t) -> None:
    c = np_centers(low, low + span, k)
    y32 = np.float32(c[0] + t * (c[-1] - c[0]))
    assume(c[0] <= float(y32) <= c[-1])
    s = HistogramSupport(low, low + span, k, encoding="two_hot")
    p = s.encode(torch.tensor([y32]))[0]
    nz = torch.nonzero(p > 0).flatten().tolist()
    assert 1 <= len(nz) <= 2 and (len(nz) == 1 or nz[1] - nz[0] == 1)
    mean = float((p.double() * torch.tensor(c)).sum())
    # exact up to float32 rounding of the operands
    tol = 1e-5 + 4 * float(np.finfo(np.float32).eps) * (abs(low) + abs(low + span))
    assert abs(mean - float(y32)) <= tol


def test_encode_counting_counts_and_clamps_like_separate_calls() -> None:
    """One pass gives count_outside's count and the histograms of the clamped targets;
    a float64 target inside [low, high] that rounds beyond it in float32 is clamped too."""
    s = HistogramSupport(low=-1.0, high=1.0 + 1e-9, num_bins=16)
    y = torch.tensor([-3.0, -1.0, 0.2, 1.0 + 5e-10, 1.0 + 1e-9, 2.5], dtype=torch.float64)
    probs, outside = s.encode_counting(y)
    assert outside == s.count_outside(y) == 2
    clamped = y.float().clamp(s.low, s.high)
    np.testing.assert_array_equal(probs.numpy(), s._hl_gauss(clamped).numpy())
    np.testing.assert_array_equal(probs[0].numpy(), probs[1].numpy())  # -3 clamps to -1
    inside = torch.tensor([0.1, -0.5])
    p, n = s.encode_counting(inside)
    assert n == 0 and torch.equal(p, s.encode(inside))
    with pytest.raises(ValueError, match="1 non-finite"):
        s.encode_counting(torch.tensor([0.0, float("nan")]))
    assert s.encode_counting(torch.zeros(0))[0].shape == (0, 16)
