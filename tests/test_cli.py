"""wavlejepa/cli.py: the persistent compilation cache of the command-line tools."""

import jax

from wavlejepa import cli


def test_compilation_cache_goes_under_the_user_cache_unless_jax_is_told(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        folder = cli.enable_compilation_cache()
        assert folder == str(tmp_path / "wavlejepa" / "jax")
        assert jax.config.jax_compilation_cache_dir == folder
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
        assert cli.enable_compilation_cache() == str(tmp_path / "mine")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
