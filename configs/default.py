r"""Default WavLeJEPA config: the WavJEPA-sized (base) model trained with SIGReg.

Every knob of the project lives here with a line on why; hardware configs (tpu_v4.py, gpu.py,
cpu_debug.py, ...) import this file and override a handful of lines.

  python -m wavlejepa.main --config=configs/default.py --workdir=/tmp/wavlejepa \
      --config.dataset.name=librispeech

Override anything from the command line: `--config.optimizer.peak_lr=2e-4`.
"""

import ml_collections

from wavlejepa import model_sizes
from wavlejepa.data import pcm


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.seed = 0  # Seeds params, masks, SIGReg slices and data order.
    config.total_steps = 375_000  # WavJEPA's recipe length.
    config.batch_size = 512  # Global crops per step over all devices and hosts (WavJEPA: 512).
    config.log_every_steps = 100  # Metrics to TensorBoard, metrics.jsonl and the log.
    config.eval_every_steps = 5_000  # Held-out loss (and evaluators in config.evals).
    config.eval_before_training = True  # Evaluate the initial params too (the random-init line).
    config.checkpoint_every_steps = 5_000  # Latest checkpoint, saved asynchronously.
    config.keep_checkpoints = 3  # Latest checkpoints kept on disk.
    # Also keep every checkpoint whose step is a multiple of this (a multiple of
    # checkpoint_every_steps), e.g. to probe the run's history later; 0 keeps only the latest.
    config.keep_checkpoints_every = 0
    config.keep_best = 1  # Checkpoints kept under workdir/best/ by lowest eval loss.
    config.debug_dummy_data = False  # Synthetic audio of the right shapes: no dataset needed.
    # A model folder (`import_wavjepa`'s output, or a run's workdir) whose encoder a new run
    # starts from, with a fresh predictor and projector; "" = random init. A resumed run takes
    # its own checkpoint instead. The model keys must build the same encoder (checked).
    config.init_from = ""

    # Model: one row of wavlejepa/model_sizes.py, then dtype/remat.
    config.model = model_sizes.model_config("base")

    # Masking per crop (WavJEPA): targets are groups of non-overlapping spans; the context is
    # what no target and no context-drop span covers.
    config.masking = ml_collections.ConfigDict()
    config.masking.span_frames = 10  # Length of every target and context-drop span (100 ms).
    config.masking.num_target_groups = 4  # Predicted separately; groups may overlap each other.
    config.masking.spans_per_target_group = 5  # Non-overlapping spans within one group.
    config.masking.num_context_drop_spans = 13  # Extra spans removed from the context.
    config.masking.min_context_fraction = 0.10  # Redraw the mask until at least this is context.
    config.masking.max_context_fraction = 0.5  # Static capacity of the gathered context.
    config.masking.max_redraws = 64  # After this many redraws, fall back to one target group.

    # The loss of wavlejepa/losses.py, one recipe for every config. SIGReg tests a fixed sample
    # of sigreg_crops x sigreg_frames rows a step (the scale rule), so these weights mean at
    # every batch and crop length what they meant where they were measured to learn: the small
    # model with 32 crops x 50 frames, where the sample is the whole batch.
    config.loss = ml_collections.ConfigDict()
    config.loss.sigreg_weight = 0.01  # lambda: prices out collapse, leaves room to predict.
    config.loss.clip_sigreg_weight = 0.001  # Second statistic: prices a clip constant as collapse.
    config.loss.sigreg_crops = 32  # Crops of the global batch drawn for SIGReg each step.
    config.loss.sigreg_frames = 50  # Real frames drawn from each of them: N = 1,600 rows.
    config.loss.num_slices = 1024  # Random 1-D projections per step (LeJEPA paper recipes).
    config.loss.t_max = 3.0  # Epps-Pulley integration range [0, t_max] (LeJEPA library).
    config.loss.num_knots = 17  # Trapezoid knots on [0, t_max].

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.peak_lr = 4e-4  # WavJEPA's released recipe (2e-4 in the paper's text).
    config.optimizer.warmup_steps = 100_000  # Linear warm-up from 0.
    config.optimizer.end_lr_fraction = 0.0  # Cosine decays to peak_lr * end_lr_fraction.
    config.optimizer.weight_decay = 0.04  # AdamW, on weight matrices only.
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.98
    config.optimizer.eps = 1e-6
    config.optimizer.grad_clip = 5.0  # Global grad-norm clip; 0 turns it off.

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "audio_folder"  # A TFDS name: "audio_folder" (ours) or a catalog one.
    config.dataset.data_dir = ""  # TFDS data_dir ("" = TFDS default, gs://... on TPU).
    config.dataset.audio_dir = ""  # audio_folder only: folder of audio to build from.
    config.dataset.split = "train"  # Split trained on.
    config.dataset.eval_split = "validation"  # Split of the held-out loss.
    config.dataset.audio_key = "audio"  # Feature holding the waveform.
    config.dataset.sample_rate = pcm.SAMPLE_RATE  # The model's rate; other rates are resampled.
    config.dataset.crop_seconds = 2.01  # 32,160 samples = 200 frames.
    config.dataset.crops_per_clip = 8  # Random crops from each clip (WavJEPA: 8).
    # Clips shorter than a crop: "pack" joins them end to end (crops full of audio, no two alike:
    # what 1 s speech_commands-style clips need), "pad" zero-pads them, "skip" drops them.
    config.dataset.short_clips = "pack"
    config.dataset.num_workers = 4  # grain worker processes (0 = in the main process).
    config.dataset.eval_batches = 4  # Batches of eval_split per held-out evaluation.
    # Building an audio_folder (python -m wavlejepa.prepare_dataset, or on first use):
    config.dataset.label_from = "none"  # Label per clip: "none", "folder" (parent dir) or "csv".
    config.dataset.label_csv = ""  # label_from="csv": file of `relative/path.wav,label` rows.
    config.dataset.validation_fraction = 0.05  # Share of files hashed into "validation".
    config.dataset.test_fraction = 0.05  # Share of files hashed into "test".
    config.dataset.min_duration_seconds = 0.1  # Shorter files are skipped (and listed) at build.

    config.health = ml_collections.ConfigDict()
    # Warn (after warm-up) when SIGReg passes this share of a collapsed sample's value, 0.40 * N
    # (sigreg.sigreg_collapse_value: 640 for the 1,600 rows); healthy runs sit at 4-8% of it.
    config.health.sigreg_collapse_fraction = 0.25
    config.health.loss_jump_factor = 3.0  # Warn when the loss jumps by this factor.
    config.health.min_rank_fraction = 0.25  # Warn below this x the first eval's encoder rank.

    config.profile = ml_collections.ConfigDict()
    config.profile.enabled = False  # Capture a jax.profiler trace via CLU's Profile action.
    config.profile.first_step = 10  # Step at which the trace starts.
    config.profile.num_steps = 5  # Steps captured.

    config.wandb = ml_collections.ConfigDict()
    config.wandb.project = ""  # Also log to Weights & Biases when set and wandb is installed.

    # Downstream evaluators run every eval_every_steps, looked up by name.
    config.evals = ml_collections.ConfigDict()

    return config
