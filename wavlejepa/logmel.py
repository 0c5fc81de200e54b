"""Log-mel filterbank frames: the hand-made baseline the linear probe compares the model against.

80 mel bins (HTK mel, 20 Hz - 8 kHz), 25 ms Hann windows every 10 ms, 512-point FFT of 16 kHz
audio, log(power + 1e-6), all with `tf.signal` (stft + linear_to_mel_weight_matrix).
"""

import numpy as np
import tensorflow as tf

from wavlejepa.data import pcm

SAMPLE_RATE = pcm.SAMPLE_RATE
NUM_MEL_BINS = 80
WINDOW_SAMPLES = 400  # 25 ms.
HOP_SAMPLES = 160  # 10 ms: the model's frame rate too.
FFT_LENGTH = 512  # The power of two above the window.
LOWER_HERTZ = 20.0  # Below the lowest voice pitch; the DC bin carries nothing.
UPPER_HERTZ = SAMPLE_RATE / 2
LOG_OFFSET = 1e-6  # Keeps silent frames finite.


@tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
def _logmel(audio_S: tf.Tensor) -> tf.Tensor:
    """One trace for every length: audio [samples] -> [frames, NUM_MEL_BINS]."""
    stft_TxF = tf.signal.stft(audio_S, WINDOW_SAMPLES, HOP_SAMPLES, FFT_LENGTH)  # Periodic Hann.
    power_TxF = tf.math.square(tf.math.abs(stft_TxF))
    mel_FxM = tf.signal.linear_to_mel_weight_matrix(
        NUM_MEL_BINS, FFT_LENGTH // 2 + 1, SAMPLE_RATE, LOWER_HERTZ, UPPER_HERTZ
    )
    return tf.math.log(tf.tensordot(power_TxF, mel_FxM, 1) + LOG_OFFSET)


def logmel(audio_S: np.ndarray) -> np.ndarray:
    """16 kHz audio [samples] (any float) -> float32 [frames, 80] at 100 Hz.

    frames = 1 + (samples - 400) // 160; audio shorter than one window is zero-padded to it.
    """
    audio = np.asarray(audio_S, np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"Expected non-empty mono audio [samples], got shape {audio.shape}.")
    if audio.size < WINDOW_SAMPLES:
        audio = np.pad(audio, (0, WINDOW_SAMPLES - audio.size))
    return _logmel(tf.constant(audio)).numpy()


def logmel_frames(clips: list[np.ndarray]) -> list[np.ndarray]:
    """`logmel` of each 16 kHz clip: the frame features of the log-mel baseline."""
    return [logmel(clip) for clip in clips]
