"""Variance shares against a closed form."""

import glob
import os

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


if __name__ == "__main__":
    absltest.main()
