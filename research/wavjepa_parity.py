r"""How close an imported WavJEPA model embeds to the official code: max |difference| per path.

Compares a model folder of `wavlejepa.import_wavjepa` with the reference embeddings that
research/wavjepa_reference.py wrote from the official code (the same perturbed checkpoint):

  TORCH_VENV/bin/python research/wavjepa_reference.py --src PEER_SRC --preset base \
      --audio_dir ../shared/data/fsdd/recordings --checkpoint /tmp/wj_base.ckpt \
      --reference /tmp/wj_base_reference.npz
  python -m wavlejepa.import_wavjepa --checkpoint=/tmp/wj_base.ckpt --output=/tmp/wj_base
  python -m research.wavjepa_parity --model=/tmp/wj_base --reference=/tmp/wj_base_reference.npz \
      --json=research/results/wavjepa_parity_base.json
"""

import json

import numpy as np
from absl import app, flags

from wavlejepa import cli, flag_kinds, model, pretrained
from wavlejepa.embedding import Embedder

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """CLI flags, defined only when run as a program (research.learning also has a --json)."""
    flag_kinds.define_input(
        "model", None, "import_wavjepa's --output folder.", kind="folder", required=True
    )
    flag_kinds.define_input("reference", None, "The reference .npz.", kind="file", required=True)
    flag_kinds.define_output("json", None, "Where to write the figures (JSON).", kind="file")
    flags.DEFINE_enum("embeddings", "embeddings", ["embeddings", "teacher_embeddings"],
                      "The reference's student or teacher frames (as imported).")  # fmt: skip


def main(argv):
    del argv
    with np.load(FLAGS.reference) as z:
        reference = {k: z[k] for k in z.files}
    params, config = pretrained.load(FLAGS.model)
    want = reference[FLAGS.embeddings]
    direct = np.asarray(model.embed(params, reference["audio_normalised"][None], config.model))[0]
    embedder = Embedder.from_config(params, config)
    results = {
        "model": FLAGS.model,
        "reference": FLAGS.reference,
        "compared": FLAGS.embeddings,
        "frames": list(want.shape),
        "max_abs_reference": float(np.abs(want).max()),
        # model.embed on the input the official runtime fed its model (same normalisation).
        "max_abs_diff_model_embed": float(np.abs(direct - want).max()),
        # The Embedder on the raw recording: our normalisation and windowing, end to end.
        "max_abs_diff_embedder_raw": float(
            np.abs(embedder.embed_one(reference["audio_raw"]).frames - want).max()
        ),
    }
    print(json.dumps(results, indent=1))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
