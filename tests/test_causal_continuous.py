"""Continuous SCMs: linear-Gaussian closed forms, exact additive-noise counterfactuals, and DoWhy 0.14 gcm
``interventional_samples`` / ``counterfactual_samples`` cross-checks (within sampling error / exactly)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from framework.causal.continuous import AdditiveNoiseSCM, LinearGaussianSCM
from framework.causal.convert import to_dowhy
from framework.causal.graphs import DAG, family
from framework.errors import ConfigError

N = 4000  # DoWhy samples per check: the tolerance is 5 standard errors


def linear() -> LinearGaussianSCM:
    return LinearGaussianSCM(family("confounding"), {("V1", "X"): 0.8, ("V1", "Y"): -0.5, ("X", "Y"): 1.5},
                             intercepts={"Y": 0.3, "X": -0.2}, noise_std={"V1": 1.0, "X": 0.5, "Y": 0.7})


def nonlinear() -> AdditiveNoiseSCM:
    dag = DAG(("X", "M", "Y"), (("X", "M"), ("M", "Y"), ("X", "Y")), name="anm")
    return AdditiveNoiseSCM(dag, {"X": lambda pa: np.full(len(pa), 0.5), "M": lambda pa: np.tanh(2 * pa[:, 0]),
                                  "Y": lambda pa: pa[:, 1] ** 2 + 0.5 * pa[:, 0]},
                            {"X": stats.norm(loc=0.0, scale=1.0), "M": stats.laplace(loc=0.0, scale=0.3),
                             "Y": stats.uniform(loc=-1.0, scale=2.0)})


def test_linear_closed_forms():
    scm = linear()
    mean, cov = scm.interventional(["Y"], {"X": 1.0})
    assert mean[0] == pytest.approx(0.3 + 1.5 * 1.0 - 0.5 * 0.0)
    assert cov[0, 0] == pytest.approx(0.25 + 0.49)
    draws = scm.sample(200_000, seed=0, do={"X": 1.0})
    assert draws[:, 2].mean() == pytest.approx(mean[0], abs=5 * np.sqrt(cov[0, 0] / 200_000))
    assert draws[:, 2].var() == pytest.approx(cov[0, 0], rel=0.02)
    m, c = scm.mean_cov()
    assert np.allclose(np.cov(scm.sample(200_000, seed=1).T), c, atol=0.03)
    # a linear SCM's unit-level counterfactual: Y_{x'} = Y + beta (x' - x), so E[Y_{x'} | X=x] = E[Y | X=x] + beta (x' - x)
    cf_mean, cf_cov = scm.counterfactual(["Y"], {"X": 2.0}, {"X": 0.4})
    obs_mean, obs_cov = scm.interventional(["Y"], evidence={"X": 0.4})
    assert cf_mean[0] == pytest.approx(obs_mean[0] + 1.5 * (2.0 - 0.4))
    assert cf_cov[0, 0] == pytest.approx(obs_cov[0, 0])
    point, zero = scm.counterfactual(["Y", "X"], {"X": 2.0}, {"V1": 0.1, "X": 0.4, "Y": 1.0})
    np.testing.assert_allclose(point, [1.0 + 1.5 * 1.6, 2.0])
    np.testing.assert_allclose(zero, 0.0, atol=1e-12)


def test_linear_matches_dowhy_interventional_and_counterfactual_samples():
    from dowhy import gcm

    scm = linear()
    model = to_dowhy(scm)
    np.random.seed(0)
    samples = gcm.interventional_samples(model, {"X": lambda x: 1.0}, num_samples_to_draw=N)
    mean, cov = scm.interventional(["V1", "Y"], {"X": 1.0})
    for j, v in enumerate(["V1", "Y"]):
        assert samples[v].mean() == pytest.approx(mean[j], abs=5 * np.sqrt(cov[j, j] / N))
    assert samples["Y"].var() == pytest.approx(cov[1, 1], rel=0.1)
    observed = pd.DataFrame(scm.sample(50, seed=3), columns=scm.variables)
    theirs = gcm.counterfactual_samples(model, {"X": lambda x: 2.0}, observed_data=observed)
    for i, row in observed.iterrows():
        ours, _ = scm.counterfactual(["V1", "X", "Y"], {"X": 2.0}, row.to_dict())
        np.testing.assert_allclose(theirs.loc[i, ["V1", "X", "Y"]].to_numpy(dtype=float), ours, atol=1e-9)


def test_nonlinear_counterfactuals_are_exact_and_match_dowhy():
    from dowhy import gcm

    scm = nonlinear()
    observed = scm.sample(200, seed=4)
    ours = scm.counterfactual(observed, {"X": -1.0})
    # by hand: the noise of M and Y is kept; M' = tanh(-2) + n_M, Y' = M'^2 - 0.5 + n_Y
    n_m = observed[:, 1] - np.tanh(2 * observed[:, 0])
    n_y = observed[:, 2] - observed[:, 1] ** 2 - 0.5 * observed[:, 0]
    m2 = np.tanh(-2.0) + n_m
    np.testing.assert_allclose(ours[:, 2], m2**2 - 0.5 + n_y, atol=1e-12)
    theirs = gcm.counterfactual_samples(to_dowhy(scm), {"X": lambda x: -1.0},
                                        observed_data=pd.DataFrame(observed, columns=scm.variables))
    np.testing.assert_allclose(theirs[list(scm.variables)].to_numpy(dtype=float), ours, atol=1e-9)


def test_nonlinear_interventional_mean_matches_dowhy_within_sampling_error():
    from dowhy import gcm

    scm = nonlinear()
    # E[Y | do(X=1)] = E[(tanh 2 + N_M)^2] + 0.5 + E[N_Y] = tanh(2)^2 + Var(N_M) + 0.5, Var(Laplace(b)) = 2 b^2
    exact = np.tanh(2.0) ** 2 + 2 * 0.3**2 + 0.5
    ours = scm.sample(200_000, seed=5, do={"X": 1.0})[:, 2]
    assert ours.mean() == pytest.approx(exact, abs=5 * ours.std() / np.sqrt(len(ours)))
    np.random.seed(1)
    theirs = gcm.interventional_samples(to_dowhy(scm), {"X": lambda x: 1.0}, num_samples_to_draw=N)["Y"]
    assert theirs.mean() == pytest.approx(exact, abs=5 * ours.std() / np.sqrt(N))


def test_continuous_bad_inputs():
    with pytest.raises(ConfigError) as err:
        LinearGaussianSCM(family("chain"), {("X", "Y"): 1.0})
    assert err.value.field == "weights.X->Y" and "not an edge" in err.value.message
    with pytest.raises(ConfigError) as err:
        linear().interventional(["Q"], {"X": 1.0})
    assert err.value.field == "targets"
    with pytest.raises(ConfigError) as err:
        linear().interventional(["Y"], {"X": float("nan")})
    assert err.value.field == "do.X"
    with pytest.raises(ConfigError) as err:
        AdditiveNoiseSCM(family("chain"), {"V2": np.tanh, "Y": np.tanh}, {"X": stats.norm(0, 1), "V2": stats.norm(),
                                                                         "Y": stats.norm()})
    assert err.value.field == "noise.X" and "keyword" in err.value.message
    with pytest.raises(ConfigError) as err:
        AdditiveNoiseSCM(family("chain"), {"V2": np.tanh}, {v: stats.norm() for v in ("X", "V2", "Y")})
    assert err.value.field == "functions.Y"
