"""SIGReg against an independent float64 numpy implementation and closed-form facts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
from absl.testing import absltest, parameterized
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from configs import cpu_debug, quickstart
from wavlejepa import sigreg


def epps_pulley_np(x_NxM: np.ndarray, t_max: float = 3.0, num_knots: int = 17) -> np.ndarray:
    """The LeJEPA library formula, written out in float64 with explicit loops over knots."""
    x = np.asarray(x_NxM, np.float64)
    n = x.shape[0]
    t = np.linspace(0.0, t_max, num_knots)
    dt = t[1] - t[0]
    total = np.zeros(x.shape[1])
    for i, tk in enumerate(t):
        trapezoid = dt if i in (0, num_knots - 1) else 2.0 * dt
        ecf_real = np.cos(tk * x).mean(axis=0)
        ecf_imag = np.sin(tk * x).mean(axis=0)
        err = (ecf_real - np.exp(-(tk**2) / 2)) ** 2 + ecf_imag**2
        total += trapezoid * np.exp(-(tk**2) / 2) * err
    return n * total


def _samples(kind: str, n: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.standard_normal((n, m))
    if kind == "student_t":
        return rng.standard_t(3, (n, m))
    if kind == "uniform":
        return rng.uniform(-2.0, 3.0, (n, m))
    if kind == "bimodal":
        return rng.standard_normal((n, m)) * 0.3 + rng.choice([-1.5, 1.5], (n, m))
    raise ValueError(kind)


class EppsPulleyTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(
        kind=("gaussian", "student_t", "uniform", "bimodal"), n=(7, 256), t_max=(3.0, 5.0)
    )
    def test_matches_float64_reference(self, kind, n, t_max):
        x = _samples(kind, n, 33, seed=n + len(kind))
        got = self.variant(lambda a: sigreg.epps_pulley(a, t_max=t_max))(
            jnp.asarray(x, jnp.float32)
        )
        chex.assert_shape(got, (33,))
        # The reference sees the same float32-rounded inputs.
        want = epps_pulley_np(x.astype(np.float32), t_max=t_max)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)

    def test_gaussian_sample_is_of_order_one_whatever_n(self):
        # Under normality E|ecf(t) - cf(t)|^2 = (1 - exp(-t^2)) / N, so the expected statistic is
        # the N-free integral of (1 - exp(-t^2)) exp(-t^2/2) over [-3, 3] (about 1.0).
        expected, _ = scipy.integrate.quad(
            lambda t: 2 * (1 - np.exp(-(t**2))) * np.exp(-(t**2) / 2), 0, 3
        )
        for n in (512, 8192):
            x = jnp.asarray(_samples("gaussian", n, 256, seed=n), jnp.float32)
            np.testing.assert_allclose(float(jnp.mean(sigreg.epps_pulley(x))), expected, rtol=0.15)

    def test_collapsed_sample_scales_as_040_n(self):
        # A constant sample has ecf(t) = exp(i t c); for c = 0 the statistic is N times the
        # integral of (1 - exp(-t^2/2))^2 exp(-t^2/2) over [-3, 3]; the trapezoid rule with 17
        # knots approximates it.
        integral, _ = scipy.integrate.quad(
            lambda t: 2 * (1 - np.exp(-(t**2) / 2)) ** 2 * np.exp(-(t**2) / 2), 0, 3
        )
        self.assertAlmostEqual(integral, 0.40, delta=0.01)
        for n in (100, 1000):
            stat = sigreg.epps_pulley(jnp.zeros((n, 1)))[0]
            np.testing.assert_allclose(float(stat), integral * n, rtol=0.01)

    def test_scales_with_n_for_the_same_distribution(self):
        # Tiling a sample k times leaves the empirical characteristic function unchanged and
        # multiplies N, so the statistic multiplies by exactly k.
        x = jnp.asarray(_samples("uniform", 50, 8, seed=3), jnp.float32)
        one = sigreg.epps_pulley(x)
        four = sigreg.epps_pulley(jnp.tile(x, (4, 1)))
        np.testing.assert_allclose(np.asarray(four), 4 * np.asarray(one), rtol=1e-5)

    def test_invariant_to_sign(self):
        x = jnp.asarray(_samples("bimodal", 200, 16, seed=5) + 0.7, jnp.float32)
        np.testing.assert_allclose(sigreg.epps_pulley(x), sigreg.epps_pulley(-x), rtol=1e-6)

    def test_weights_select_rows(self):
        x = jnp.asarray(_samples("student_t", 40, 5, seed=9), jnp.float32)
        weights = jnp.asarray(np.arange(40) % 3 != 0, jnp.float32)
        got = sigreg.epps_pulley(x, weights_N=weights)
        want = epps_pulley_np(np.asarray(x)[np.asarray(weights) > 0])
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4)

    def test_gradients_finite_and_match_finite_differences(self):
        x = _samples("uniform", 30, 3, seed=11)
        grad = jax.grad(lambda a: jnp.sum(sigreg.epps_pulley(a)))(jnp.asarray(x, jnp.float32))
        self.assertTrue(np.all(np.isfinite(np.asarray(grad))))
        eps = 1e-4
        for i, j in [(0, 0), (7, 1), (29, 2)]:
            plus, minus = x.copy(), x.copy()
            plus[i, j] += eps
            minus[i, j] -= eps
            fd = (epps_pulley_np(plus).sum() - epps_pulley_np(minus).sum()) / (2 * eps)
            np.testing.assert_allclose(float(grad[i, j]), fd, rtol=2e-3, atol=1e-4)
        # Finite even for the collapsed sample, where the statistic is at its maximum.
        grad0 = jax.grad(lambda a: jnp.sum(sigreg.epps_pulley(a)))(jnp.zeros((16, 4)))
        self.assertTrue(np.all(np.isfinite(np.asarray(grad0))))


class SigregTest(chex.TestCase):
    def test_random_directions_are_unit_and_deterministic(self):
        d = sigreg.random_directions(jax.random.PRNGKey(0), 48, 100)
        chex.assert_shape(d, (48, 100))
        np.testing.assert_allclose(np.linalg.norm(np.asarray(d), axis=0), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(d, sigreg.random_directions(jax.random.PRNGKey(0), 48, 100))
        self.assertFalse(np.allclose(d, sigreg.random_directions(jax.random.PRNGKey(1), 48, 100)))

    @chex.variants(with_jit=True, without_jit=True)
    def test_sigreg_is_mean_statistic_of_projections(self):
        rng = np.random.default_rng(0)
        emb = rng.standard_normal((64, 12)) @ rng.standard_normal((12, 12))  # Anisotropic.
        dirs = sigreg.random_directions(jax.random.PRNGKey(3), 12, 40)
        got = self.variant(sigreg.sigreg)(jnp.asarray(emb, jnp.float32), dirs)
        chex.assert_shape(got, ())
        projected = emb.astype(np.float32).astype(np.float64) @ np.asarray(dirs, np.float64)
        np.testing.assert_allclose(float(got), epps_pulley_np(projected).mean(), rtol=1e-4)

    def test_float32_agrees_with_float64(self):
        emb = _samples("student_t", 500, 16, seed=2)
        dirs = np.asarray(sigreg.random_directions(jax.random.PRNGKey(4), 16, 64), np.float64)
        got32 = float(sigreg.sigreg(jnp.asarray(emb, jnp.float32), jnp.asarray(dirs, jnp.float32)))
        np.testing.assert_allclose(got32, epps_pulley_np(emb @ dirs).mean(), rtol=1e-4)

    def test_rows_sharded_over_devices_give_the_global_statistic(self):
        # Rows split over 8 devices under jit, as in the data-parallel train step: the statistic
        # is the global one (means taken over all rows before squaring), not a mean of shards.
        devices = np.array(jax.devices()[:8])
        self.assertEqual(len(devices), 8, "conftest sets 8 host devices")
        sharding = NamedSharding(Mesh(devices, ("data",)), PartitionSpec("data"))
        emb = _samples("bimodal", 64, 10, seed=8)
        dirs = sigreg.random_directions(jax.random.PRNGKey(5), 10, 32)
        sharded = jax.device_put(jnp.asarray(emb, jnp.float32), sharding)
        got = float(jax.jit(sigreg.sigreg)(sharded, dirs))
        projected = emb.astype(np.float64) @ np.asarray(dirs, np.float64)
        np.testing.assert_allclose(got, epps_pulley_np(projected).mean(), rtol=1e-4)
        per_shard = np.mean([epps_pulley_np(projected[8 * i : 8 * i + 8]).mean() for i in range(8)])
        self.assertGreater(abs(got - per_shard), 0.1)

    def test_collapse_value_is_the_statistic_of_a_collapsed_global_batch(self):
        config = cpu_debug.get_config()  # 8 crops of 0.51 s: 50 frames each, 400 rows.
        value = sigreg.sigreg_collapse_value(config)
        self.assertEqual(value, 0.40 * 8 * 50)
        dirs = sigreg.random_directions(jax.random.PRNGKey(0), config.model.encoder_width, 16)
        collapsed = sigreg.sigreg(jnp.zeros((8 * 50, config.model.encoder_width)), dirs)
        np.testing.assert_allclose(float(collapsed), value, rtol=0.01)


class ShortSampleWarningTest(absltest.TestCase):
    """`short_sample_warning`: a batch of fewer crops than loss.sigreg_crops whose crops hold
    frames SIGReg leaves untested; its advice restores the scale rule's N."""

    def _config(self, batch_size, crop_seconds, sigreg_frames=None):
        config = quickstart.get_config()  # sigreg_crops x sigreg_frames = 32 x 50, lambda 0.01.
        config.batch_size, config.dataset.crop_seconds = batch_size, crop_seconds
        if sigreg_frames is not None:
            config.loss.sigreg_frames = sigreg_frames
        return config

    def test_eight_crops_of_two_seconds_test_a_quarter_of_the_rows(self):
        config = self._config(8, 2.01)  # 200 frames a crop; 50 of each tested.
        self.assertEqual(sigreg.sample_shape(config), (8, 50))
        message = sigreg.short_sample_warning(config)
        self.assertIn(
            "8 x 50 = 400 rows a step, not loss.sigreg_crops x loss.sigreg_frames = 1600", message
        )
        self.assertIn("is 4 instead of 16", message)  # 0.01 x 400 against 0.01 x 1,600.
        self.assertIn("--config.loss.sigreg_frames=200 tests 1600 rows", message)
        followed = self._config(8, 2.01, sigreg_frames=200)
        self.assertEqual(np.prod(sigreg.sample_shape(followed)), 1600)
        self.assertIsNone(sigreg.short_sample_warning(followed))

    def test_advice_is_capped_at_the_frames_a_crop_holds(self):
        message = sigreg.short_sample_warning(self._config(4, 2.01))  # 1,600 / 4 = 400 > 200.
        self.assertIn("--config.loss.sigreg_frames=200 tests 800 rows", message)

    def test_no_warning_when_the_sample_is_full_or_the_batch_is_all_there_is(self):
        self.assertIsNone(sigreg.short_sample_warning(self._config(32, 0.51)))  # The recipe.
        self.assertIsNone(sigreg.short_sample_warning(self._config(64, 2.01)))
        self.assertIsNone(sigreg.short_sample_warning(cpu_debug.get_config()))  # 8 x 50: all.


if __name__ == "__main__":
    absltest.main()
