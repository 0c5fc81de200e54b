"""Data parallelism: 2 hosts x 4 devices match 1 device (and, marked slow, 1 host x 8 devices do).

Every run trains configs/cpu_debug.py on the launcher's "global_stream" data: host h of H gets
rows h*B/H..(h+1)*B/H of the same global batches, so the runs differ only in how the batch is
split. Sums are reordered across devices, so metrics agree to float32 round-off, not bitwise.
"""

import json
import re

import numpy as np
import portpicker
import pytest
import test_train_runner as runner

ARGS = runner.DEBUG + ["--config.log_every_steps=1", "--data=global_stream"]
RTOL = 1e-5


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "jax_cache"  # Shared with test_train.py.


def _single_process_run(tmp_path_factory, cache_dir, devices):
    workdir = tmp_path_factory.mktemp(f"devices_{devices}")
    env = runner.subprocess_env(cache_dir, devices=devices)
    runner.run(ARGS + [f"--workdir={workdir}"], env, workdir.parent / f"{workdir.name}.log")
    return workdir


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, cache_dir):
    return _single_process_run(tmp_path_factory, cache_dir, 1)


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory, cache_dir):
    return _single_process_run(tmp_path_factory, cache_dir, 8)


def _assert_same_metrics(actual_dir, expected_dir):
    actual, expected = runner.records(actual_dir), runner.records(expected_dir)
    assert [(r["step"], r["split"]) for r in actual] == [(r["step"], r["split"]) for r in expected]
    assert len(actual) == 23  # 20 train steps and 3 evals (before training, steps 10 and 20).
    for a, e in zip(actual, expected, strict=True):
        assert a.keys() == e.keys()
        for key in a.keys() - {"step", "split"}:
            np.testing.assert_allclose(a[key], e[key], rtol=RTOL, err_msg=f"{key} {a['step']}")


@pytest.mark.slow  # Covered by the 2 x 4 devices against 1 below and test_train_step's 8 against 1.
def test_eight_devices_match_one_device(one_device, eight_devices):
    _assert_same_metrics(eight_devices, one_device)


def _two_processes(args, env, tmp_path, *, main_module=False, expect=(0, 0)) -> list[str]:
    """Runs process i of 2 with `args[i]` and the coordinator flags (the test launcher, or
    main.py with main_module=True); fails with both logs' tails unless their exit codes are
    `expect`. Their logs."""
    port = portpicker.pick_unused_port()
    coordinator = [f"--coordinator_address=localhost:{port}", "--num_processes=2"]
    procs = [
        runner.launch(
            [*args[i], *coordinator, f"--process_id={i}"],
            env,
            tmp_path / f"process_{i}.log",
            main_module=main_module,
        )
        for i in range(2)
    ]
    try:
        codes = [p.wait(timeout=540) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"process_{i}.log").read_text() for i in range(2)]
    assert codes == list(expect), "\n\n".join(_tail(log) for log in logs)
    return logs


def _tail(log: str, chars: int = 3000) -> str:
    """The last `chars` of a log before a crash's list of extension modules (which filled the
    whole tail of an aborted process's log and hid why it aborted)."""
    return log.split("\nExtension modules:")[0][-chars:]


def _two_hosts(workdir, tmp_path, cache_dir, extra_args=((), ())) -> list[str]:
    """Runs ARGS on 2 processes x 4 devices (`extra_args[i]` for process i); their logs."""
    env = runner.subprocess_env(cache_dir, devices=4)
    args = [ARGS + [f"--workdir={workdir}", *extra] for extra in extra_args]
    return _two_processes(args, env, tmp_path)


def test_two_hosts_match_one_device_and_read_only_their_shard(tmp_path, cache_dir, one_device):
    workdir = tmp_path / "run"
    logs = _two_hosts(workdir, tmp_path, cache_dir)
    assert "8 devices on 2 hosts; this is host 1." in logs[1]

    _assert_same_metrics(workdir, one_device)
    for i in range(2):  # Each host asked for its own half of the global batch...
        call = json.loads((workdir / f"loader_train_process_{i}.json").read_text())
        assert call == {"batch_size": 4, "shard_index": i, "shard_count": 2}
    # ...and checkpointed its own position in it.
    data_iter = workdir / "checkpoints/20/data_iter"
    assert {p.name for p in data_iter.glob("process_*.json")} == {
        "process_0-of-2.json",
        "process_1-of-2.json",
    }


def test_sigterm_on_one_host_stops_every_host_at_the_same_step(tmp_path, cache_dir):
    # Host 1 alone gets a SIGTERM (a preemption notice) as it takes batch 7. JAX's preemption
    # service tells every host, and orbax's reached_preemption names the same step on both:
    # both save it, stop and exit 0.
    workdir = tmp_path / "run"
    steps_60 = ("--config.total_steps=60",)  # Room for the hosts to agree before the end.
    logs = _two_hosts(
        workdir,
        tmp_path,
        cache_dir,
        extra_args=(steps_60, steps_60 + ("--fault=sigterm", "--fault_at=7")),
    )
    steps = [re.findall(r"every host stops and saves at step (\d+)", log) for log in logs]
    assert steps[0] and steps[0] == steps[1], steps
    stopped = int(steps[0][0])
    assert 7 <= stopped < 60
    for log in logs:
        assert f"Stopped at step {stopped}; its checkpoint is saved." in log
    assert runner.committed_steps(workdir / "checkpoints")[-1] == stopped
    assert max(r["step"] for r in runner.records(workdir)) == stopped


def test_a_failed_dataset_build_stops_every_host(tmp_path, cache_dir):
    # Host 0 alone builds the dataset; here every file is corrupt, so the build fails. Before,
    # host 1 waited at a barrier until JAX's runtime gave up (30 s on CPU) and died with a Gloo
    # traceback, exit 1. Now each host ends in one line naming the problem, host 0's own and
    # host 1's pointing at host 0's log, with exit 2. Nothing is written.
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "a.wav").write_bytes(b"RIFF not a wave file")
    workdir = tmp_path / "run"
    args = [
        "--config=configs/cpu_debug.py",
        f"--config.dataset.audio_dir={audio}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
        f"--workdir={workdir}",
    ]
    env = runner.subprocess_env(cache_dir, devices=1)
    logs = _two_processes([args, args], env, tmp_path, main_module=True, expect=(2, 2))
    assert "error: No usable audio in" in logs[0]
    assert "error: Host 0 could not build dataset" in logs[1]
    for log in logs:
        assert "Traceback" not in log
    assert not workdir.exists()
