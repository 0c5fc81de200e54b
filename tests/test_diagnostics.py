"""Variance shares and the effective rank against closed forms and numpy."""

import glob
import os

import chex
import numpy as np
from absl.testing import absltest

import wavlejepa.data
from wavlejepa import diagnostics
from wavlejepa.data import decode


class VarianceSharesTest(absltest.TestCase):
    def test_additive_position_and_clip_codes(self):
        # e[n, t] = p[t] + c[n] with centred p and c: the shares are var(p) / (var(p) + var(c)).
        rng = np.random.default_rng(0)
        p = rng.standard_normal((20, 6)) * 2.0
        c = rng.standard_normal((30, 6))
        p -= p.mean(0)
        c -= c.mean(0)
        e = p[None, :, :] + c[:, None, :]
        shares = diagnostics.variance_shares(e)
        vp, vc = p.var(0).sum(), c.var(0).sum()
        np.testing.assert_allclose(shares["position_share"], vp / (vp + vc), rtol=1e-10)
        np.testing.assert_allclose(shares["clip_share"], vc / (vp + vc), rtol=1e-10)

    def test_bundled_crops_are_normalised(self):
        crops = diagnostics.sample_crops(4, 8160)
        self.assertEqual(crops.shape, (4, 8160))
        files = sorted(glob.glob(os.path.join(wavlejepa.data.FSDD_SAMPLE_DIR, "*.wav")))[:4]
        for crop, path in zip(crops, files, strict=True):
            n = min(len(decode.decode_file(path).audio), 8160)
            # Normalised over its real samples; std = sqrt(var / (var + 1e-5)): just under 1.
            np.testing.assert_allclose(crop[:n].mean(), 0.0, atol=1e-5)
            self.assertTrue(0.99 < crop[:n].std() <= 1.0 + 1e-6)
            np.testing.assert_array_equal(crop[n:], 0.0)  # The padding stays silent.


def numpy_effective_rank(x, weights=None):
    """The definition in float64: exp(entropy) of the weighted covariance's eigenvalue shares."""
    cov = np.cov(np.asarray(x, np.float64), rowvar=False, aweights=weights, bias=True)
    p = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    p = p[p > 0] / p.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def exact_covariance_rows(eigenvalues, dim, rng):
    """2k rows whose mean is a random offset and whose (biased) covariance has exactly these k
    eigenvalues (the rest 0), along random orthonormal directions in `dim` dims: +-a_i q_i with
    a_i^2 / k = lambda_i."""
    k = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    a = np.sqrt(k * np.asarray(eigenvalues, np.float64))
    rows = np.concatenate([a[:, None] * q[:, :k].T, -a[:, None] * q[:, :k].T])
    return rows + rng.standard_normal(dim)


def entropy_rank(eigenvalues):
    p = np.asarray(eigenvalues, np.float64) / np.sum(eigenvalues)
    return float(np.exp(-np.sum(p * np.log(p))))


class EffectiveRankTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_numpy_with_weights(self):
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12))).astype(np.float32)
        weights = rng.uniform(0.0, 2.0, 300).astype(np.float32)
        rank = self.variant(diagnostics.effective_rank)
        got = rank(x, weights)
        chex.assert_shape(got, ())
        self.assertEqual(got.dtype, np.float32)
        np.testing.assert_allclose(got, numpy_effective_rank(x, weights), rtol=1e-4)
        np.testing.assert_allclose(rank(x), numpy_effective_rank(x), rtol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_isotropic_gaussian_reads_its_dimension(self):
        x = np.random.default_rng(1).standard_normal((50_000, 16)).astype(np.float32)
        got = float(self.variant(diagnostics.effective_rank)(x))
        np.testing.assert_allclose(got, numpy_effective_rank(x), rtol=1e-4)
        # The sample covariance's eigenvalues spread by ~sqrt(D / N): the rank is just under D.
        self.assertBetween(got, 15.95, 16.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_closed_forms_of_exact_covariances(self):
        rng = np.random.default_rng(2)
        rank = self.variant(diagnostics.effective_rank)
        for k in (1, 3, 7):  # k equal eigenvalues: exactly k.
            x = exact_covariance_rows(np.full(k, 0.5), 24, rng).astype(np.float32)
            np.testing.assert_allclose(rank(x), k, rtol=2e-4, err_msg=f"k={k}")
        eigenvalues = [4.0, 2.0, 1.0, 0.25]
        x = exact_covariance_rows(eigenvalues, 24, rng).astype(np.float32)
        np.testing.assert_allclose(rank(x), entropy_rank(eigenvalues), rtol=2e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rank_one_and_constant_rows_read_one(self):
        rng = np.random.default_rng(3)
        line = rng.standard_normal(1000)[:, None] * rng.standard_normal(32) + 5.0
        rank = self.variant(diagnostics.effective_rank)
        np.testing.assert_allclose(rank(line.astype(np.float32)), 1.0, rtol=1e-3)
        # A constant: its centred rows are 0, or one repeated rounding error (one direction).
        constant = np.tile(rng.standard_normal(32), (10, 1)).astype(np.float32)
        np.testing.assert_allclose(rank(constant), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(rank(np.zeros((10, 32), np.float32)), 1.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rows_of_weight_zero_are_ignored(self):
        rng = np.random.default_rng(4)
        x = exact_covariance_rows([3.0, 1.0], 8, rng)
        padded = np.concatenate([x, 100.0 * rng.standard_normal((6, 8))]).astype(np.float32)
        weights = np.concatenate([np.ones(len(x)), np.zeros(6)]).astype(np.float32)
        got = self.variant(diagnostics.effective_rank)(padded, weights)
        np.testing.assert_allclose(got, entropy_rank([3.0, 1.0]), rtol=2e-4)


if __name__ == "__main__":
    absltest.main()
