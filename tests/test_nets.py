"""Networks: shapes, and numbers against numpy re-implementations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from absl.testing import absltest, parameterized

from configs import cpu_debug, default
from wavlejepa import model
from wavlejepa.nets import encoder, layers, predictor, projector, transformer, waveform


def _tiny():
    return cpu_debug.get_config().model


def _ln_np(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _gelu_np(x, form="tanh"):
    """GELU: the tanh approximation (the model's default) or the exact erf form."""
    if form == "exact":
        return 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2)))
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


class LayersTest(chex.TestCase):
    def test_sincos_closed_form(self):
        table = layers.sincos_positions(200, 768)
        chex.assert_shape(table, (200, 768))
        for p, i in [(0, 0), (5, 3), (199, 100), (57, 383)]:
            w = 10000.0 ** (-2 * i / 768)
            self.assertAlmostEqual(table[p, i], np.sin(p * w), places=5)
            self.assertAlmostEqual(table[p, 384 + i], np.cos(p * w), places=5)

    def test_layer_norm_in_float32_for_bfloat16_input(self):
        x = np.random.default_rng(0).standard_normal((3, 7, 16)).astype(np.float32) * 5 + 2
        params = {"scale": jnp.linspace(0.5, 1.5, 16), "bias": jnp.linspace(-1, 1, 16)}
        got = layers.layer_norm_apply(params, jnp.asarray(x))
        want = _ln_np(x, np.asarray(params["scale"]), np.asarray(params["bias"]), 1e-6)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        got_bf16 = layers.layer_norm_apply(params, jnp.asarray(x, jnp.bfloat16))
        self.assertEqual(got_bf16.dtype, jnp.bfloat16)
        np.testing.assert_allclose(np.asarray(got_bf16, np.float32), want, atol=0.1)


class WaveformTest(chex.TestCase):
    def test_base_crop_gives_200_frames_of_768(self):
        cfg = default.get_config().model
        self.assertEqual(waveform.num_frames(32_160, cfg), 200)
        self.assertEqual(waveform.num_frames(16_000, cfg), 99)
        params = jax.eval_shape(lambda k: waveform.init(k, cfg), jax.random.PRNGKey(0))
        out = jax.eval_shape(lambda p, a: waveform.apply(p, a, cfg), params, jnp.zeros((2, 32_160)))
        chex.assert_shape(out, (2, 200, 768))

    def test_valid_frames_counts_frames_of_real_samples(self):
        cfg = default.get_config().model
        lengths = np.array([32_160, 16_000, 1_000, 400, 240, 239, 10, 0])
        want = [waveform.num_frames(max(int(n), 240), cfg) if n >= 240 else 1 for n in lengths]
        np.testing.assert_array_equal(waveform.valid_frames(lengths, cfg), want)

    def test_padding_is_ignored_given_lengths(self):
        # Padded rows with lengths embed their real frames exactly as the real audio alone does.
        cfg = _tiny()
        params = model.init(jax.random.PRNGKey(0), cfg)
        audio = np.random.default_rng(2).standard_normal((3, 8160)).astype(np.float32)
        lengths = np.array([8160, 5000, 2000])
        padded = np.where(np.arange(8160)[None] < lengths[:, None], audio, 7.0)  # Loud padding.
        got = jax.jit(lambda a, n: model.embed(params, a, cfg, lengths_B=n))(padded, lengths)
        for b, n in enumerate(lengths):
            alone = model.embed(params, audio[b : b + 1, :n], cfg)[0]
            np.testing.assert_allclose(got[b, : alone.shape[0]], alone, atol=2e-5)

    def test_receptive_field_and_clip_ids_against_hand_counts(self):
        cfg = _tiny()
        self.assertEqual(waveform.hop_samples(cfg), 160)
        self.assertEqual(waveform.receptive_samples(cfg), 240)  # 10 + 2*5 + ... + 1*80.
        # Frame t reads samples [160 t, 160 t + 240): its centre is 160 t + 120.
        starts = jnp.array([[0, 1000, 2000, -1], [0, -1, -1, -1], [0, 120, 121, -1]])
        got = waveform.frame_clip_ids(starts, 10, cfg)
        centres = 160 * np.arange(10) + 120
        want = np.stack(
            [
                (centres >= 1000).astype(int) + (centres >= 2000),  # 1000 <= 1080 (t = 6).
                np.zeros(10, int),
                1 + (centres >= 121).astype(int),  # Frame 0's centre is 120: already clip 1.
            ]
        )
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got[0, 5:8], [0, 1, 1])

    def test_identity_projection_passes_the_normalised_conv_features(self):
        # WavJEPA's form where conv channels equal the encoder width: no projection. With the
        # identity (and the LayerNorm's init, scale 1 and bias 0) each frame minus its position
        # has mean 0 and variance 1 over channels; the convs are drawn as with "normal".
        cfg = _tiny()
        cfg.conv_channels = cfg.encoder_width
        normal = waveform.init(jax.random.PRNGKey(3), cfg)
        cfg.projection_init = "identity"
        params = waveform.init(jax.random.PRNGKey(3), cfg)
        np.testing.assert_array_equal(params["projection"]["kernel"], np.eye(cfg.encoder_width))
        np.testing.assert_array_equal(params["projection"]["bias"], 0.0)
        chex.assert_trees_all_equal(
            {k: v for k, v in params.items() if k != "projection"},
            {k: v for k, v in normal.items() if k != "projection"},
        )
        audio = np.random.default_rng(3).standard_normal((2, 4000)).astype(np.float32)
        x = np.asarray(waveform.apply(params, jnp.asarray(audio), cfg), np.float64)
        features = x - layers.sincos_positions(x.shape[1], x.shape[2])
        np.testing.assert_allclose(features.mean(-1), 0.0, atol=1e-5)
        np.testing.assert_allclose(features.var(-1), 1.0, atol=1e-3)

    def test_identity_projection_needs_equal_widths(self):
        cfg = _tiny()  # 32 conv channels, encoder width 64.
        cfg.projection_init = "identity"
        with self.assertRaisesRegex(ValueError, "conv_channels == encoder_width, not 32 and 64"):
            waveform.init(jax.random.PRNGKey(0), cfg)

    def test_too_short_audio_raises(self):
        with self.assertRaisesRegex(ValueError, "too short"):
            waveform.num_frames(200, _tiny())

    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_numpy_conv_stack(self):
        cfg = _tiny()
        params = waveform.init(jax.random.PRNGKey(1), cfg)
        audio = np.random.default_rng(1).standard_normal((2, 1000)).astype(np.float32)
        got = self.variant(lambda p, a: waveform.apply(p, a, cfg))(params, jnp.asarray(audio))
        p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

        x = audio.astype(np.float64)[:, :, None]
        for i, (kernel, stride) in enumerate(zip(cfg.conv_kernels, cfg.conv_strides, strict=True)):
            w = p[f"conv_{i}"]["kernel"]
            frames = (x.shape[1] - kernel) // stride + 1
            x = np.stack(
                [
                    np.einsum("bki,kio->bo", x[:, t * stride : t * stride + kernel], w)
                    for t in range(frames)
                ],
                axis=1,
            )
            if i == 0:  # GroupNorm, one group per channel: normalise each channel over time.
                gn = p["conv_0_group_norm"]
                x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
                x = x * gn["scale"] + gn["bias"]
            x = _gelu_np(x)
        x = _ln_np(x, p["layer_norm"]["scale"], p["layer_norm"]["bias"], 1e-5)
        x = x @ p["projection"]["kernel"] + p["projection"]["bias"]
        x = x + layers.sincos_positions(x.shape[1], x.shape[2])
        chex.assert_shape(got, (2, waveform.num_frames(1000, cfg), cfg.encoder_width))
        np.testing.assert_allclose(np.asarray(got), x, rtol=1e-4, atol=1e-4)


def _attention_np(p, x, kv, heads, kv_len):
    dense = lambda d, a: a @ np.asarray(d["kernel"], np.float64) + np.asarray(d["bias"])
    q, k, v = dense(p["query"], x), dense(p["key"], kv), dense(p["value"], kv)
    t, width = x.shape[0], q.shape[-1]
    hd = width // heads
    q, k, v = (a.reshape(a.shape[0], heads, hd) for a in (q, k, v))
    logits = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
    logits[:, :, kv_len:] = -np.inf
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("hts,shd->thd", probs, v).reshape(t, width)
    return dense(p["out"], out)


def _block_np(p, x, heads, length, block_norm, gelu):
    """One self-attention block in float64; rows past `length` are padding (keys ignored)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    ln = lambda name, y: _ln_np(y, p[name]["scale"], p[name]["bias"], 1e-6)
    dense = lambda d, a: a @ d["kernel"] + d["bias"]
    attend = lambda y: _attention_np(p["self_attention"], y, y, heads, length)
    mlp = lambda y: dense(p["mlp"]["out"], _gelu_np(dense(p["mlp"]["hidden"], y), gelu))
    if block_norm == "post":  # PyTorch's TransformerEncoderLayer(norm_first=False).
        x = ln("self_attention_norm", x + attend(x))
        return ln("mlp_norm", x + mlp(x))
    x = x + attend(ln("self_attention_norm", x))
    return x + mlp(ln("mlp_norm", x))


class TransformerTest(chex.TestCase):
    @parameterized.parameters(("pre", "tanh"), ("post", "exact"), ("post", "tanh"))
    def test_block_matches_numpy_in_both_forms(self, block_norm, gelu):
        params = transformer.block_init(jax.random.PRNGKey(5), 16, 48)
        # Norm scales and biases away from 1 and 0, so a misplaced norm cannot pass.
        params = jax.tree.map(
            lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape), params
        )
        x = np.random.default_rng(5).standard_normal((2, 6, 16)).astype(np.float32)
        lengths = np.array([4, 6], np.int32)
        got = transformer.block_apply(
            params,
            jnp.asarray(x),
            num_heads=4,
            lengths_B=jnp.asarray(lengths),
            block_norm=block_norm,
            gelu=gelu,
        )
        for b in range(2):
            want = _block_np(params, x[b].astype(np.float64), 4, lengths[b], block_norm, gelu)
            np.testing.assert_allclose(got[b, : lengths[b]], want[: lengths[b]], atol=2e-5)

    def test_gelu_forms_differ_where_the_approximation_errs(self):
        x = np.linspace(-4, 4, 81)
        for form in layers.GELUS:
            np.testing.assert_allclose(layers.gelu(x, form), _gelu_np(x, form), atol=1e-6)
        gap = np.abs(np.asarray(layers.gelu(x, "exact")) - np.asarray(layers.gelu(x, "tanh")))
        self.assertGreater(gap.max(), 1e-4)  # So the test above tells the two forms apart.
        with self.assertRaisesRegex(ValueError, "choose one of"):
            layers.gelu(x, "erf")

    def test_attention_matches_numpy_and_ignores_padded_keys(self):
        key = jax.random.PRNGKey(2)
        params = transformer.attention_init(key, 16, 24, 32)
        rng = np.random.default_rng(2)
        x = rng.standard_normal((2, 5, 16)).astype(np.float32)
        kv = rng.standard_normal((2, 7, 24)).astype(np.float32)
        lengths = np.array([3, 7], np.int32)
        got = transformer.attention_apply(
            params, jnp.asarray(x), jnp.asarray(kv), num_heads=4, kv_lengths_B=jnp.asarray(lengths)
        )
        for b in range(2):
            want = _attention_np(
                params, x[b].astype(np.float64), kv[b].astype(np.float64), 4, lengths[b]
            )
            np.testing.assert_allclose(np.asarray(got[b]), want, rtol=1e-4, atol=1e-5)
        kv_changed = kv.copy()
        kv_changed[0, 3:] = 100.0  # Padding of example 0 only.
        got2 = transformer.attention_apply(
            params,
            jnp.asarray(x),
            jnp.asarray(kv_changed),
            num_heads=4,
            kv_lengths_B=jnp.asarray(lengths),
        )
        np.testing.assert_allclose(got2[0], got[0], rtol=1e-6)

    def test_scan_over_stacked_blocks_equals_blocks_in_turn(self):
        key = jax.random.PRNGKey(3)
        stacked = transformer.stack_init(key, 3, width=16, mlp_dim=32)
        x = jax.random.normal(jax.random.PRNGKey(4), (2, 6, 16))
        lengths = jnp.array([4, 6])
        want = x
        for i in range(3):
            block = jax.tree.map(lambda a, i=i: a[i], stacked)
            want = transformer.block_apply(block, want, num_heads=2, lengths_B=lengths)
        got = transformer.stack_apply(stacked, x, num_heads=2, lengths_B=lengths)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        got_remat, grad_remat = jax.value_and_grad(
            lambda p: jnp.sum(
                transformer.stack_apply(p, x, remat=True, num_heads=2, lengths_B=lengths)
            )
        )(stacked)
        plain, grad = jax.value_and_grad(
            lambda p: jnp.sum(transformer.stack_apply(p, x, num_heads=2, lengths_B=lengths))
        )(stacked)
        np.testing.assert_allclose(got_remat, plain, rtol=1e-6)
        chex.assert_trees_all_close(grad_remat, grad, rtol=1e-5, atol=1e-6)


class ModelTest(chex.TestCase):
    def test_base_parameter_counts(self):
        # WavJEPA: ~3.7 M conv + 0.4 M norm/projection, ~85 M context encoder. Our predictor
        # adds a cross-attention per block to WavJEPA's 22 M.
        cfg = default.get_config().model
        params = jax.eval_shape(lambda k: model.init(k, cfg), jax.random.PRNGKey(0))
        counts = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params.items()}
        self.assertEqual(counts["waveform_encoder"], 4_071_168)
        self.assertEqual(counts["context_encoder"], 85_056_000)
        self.assertEqual(counts["predictor"], 28_991_232)
        self.assertEqual(counts["projector"], 6_304_000)
        conv = sum(params["waveform_encoder"][f"conv_{i}"]["kernel"].size for i in range(6))
        self.assertEqual(conv, 10 * 512 + 4 * 3 * 512 * 512 + 2 * 512 * 512)
        self.assertTrue(all(x.dtype == jnp.float32 for x in jax.tree.leaves(params)))

    def test_predictor_and_projector_shapes(self):
        cfg = _tiny()
        params = model.init(jax.random.PRNGKey(0), cfg)
        context = jnp.ones((3, 9, cfg.encoder_width))
        positions = jnp.zeros((3, 10), jnp.int32) + jnp.arange(10)
        out = predictor.apply(
            params["predictor"], context, jnp.array([9, 4, 1]), positions, jnp.array([10, 10, 5]),
            cfg, num_frames=50,
        )  # fmt: skip
        chex.assert_shape(out, (3, 10, cfg.encoder_width))
        chex.assert_tree_all_finite(out)
        proj = projector.apply(params["projector"], jnp.ones((3, cfg.encoder_width)), cfg)
        chex.assert_shape(proj, (3, cfg.projector_dim))

    def test_groups_sharing_a_context_match_the_repeated_context(self):
        # Target groups of a crop read one context: projected once (`groups_per_context`) or
        # repeated per group before the predictor must give the same outputs and gradients.
        cfg = _tiny()
        params = model.init(jax.random.PRNGKey(0), cfg)["predictor"]
        crops, groups, keys, queries = 2, 3, 9, 10
        context = jax.random.normal(jax.random.PRNGKey(1), (crops, keys, cfg.encoder_width))
        context_lengths = jnp.array([9, 4])
        positions = jax.random.randint(jax.random.PRNGKey(2), (crops * groups, queries), 0, 50)
        target_lengths = jnp.array([10, 7, 3, 10, 10, 1])

        def loss(p, crop_context, shared: bool):
            out = predictor.apply(
                p,
                crop_context if shared else jnp.repeat(crop_context, groups, axis=0),
                context_lengths if shared else jnp.repeat(context_lengths, groups, axis=0),
                positions,
                target_lengths,
                cfg,
                num_frames=50,
                groups_per_context=groups if shared else 1,
            )
            valid = jnp.arange(queries)[None, :, None] < target_lengths[:, None, None]
            return jnp.sum(jnp.where(valid, jnp.sin(out), 0.0)), out

        grad_fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
        (loss_shared, out_shared), grads_shared = grad_fn(params, context, True)
        (loss_repeated, out_repeated), grads_repeated = grad_fn(params, context, False)
        chex.assert_shape(out_shared, (crops * groups, queries, cfg.encoder_width))
        np.testing.assert_allclose(out_shared, out_repeated, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(loss_shared, loss_repeated, rtol=1e-5)
        chex.assert_trees_all_close(grads_shared, grads_repeated, rtol=1e-4, atol=1e-5)
        with self.assertRaisesRegex(ValueError, "kv_repeat"):
            predictor.apply(
                params, context, context_lengths, positions[:5], target_lengths[:5], cfg,
                num_frames=50, groups_per_context=groups,
            )  # fmt: skip

    @chex.variants(with_jit=True, without_jit=True)
    def test_embed_is_waveform_then_encoder(self):
        cfg = _tiny()
        params = model.init(jax.random.PRNGKey(0), cfg)
        audio = jax.random.normal(jax.random.PRNGKey(1), (2, 8160))
        got = self.variant(lambda p, a: model.embed(p, a, cfg))(params, audio)
        chex.assert_shape(got, (2, 50, cfg.encoder_width))
        frames = waveform.apply(params["waveform_encoder"], audio, cfg)
        want = encoder.apply(params["context_encoder"], frames, cfg)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    absltest.main()
