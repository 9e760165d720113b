"""The persistent JAX compilation cache of the command line (issue 12)."""

import subprocess
import sys

import pytest

from scimpute import _jax_cache as C


def test_cache_dir_rules(monkeypatch, tmp_path):
    monkeypatch.delenv(C.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert C.cache_dir() == tmp_path / "scimpute" / "jax"
    for off in ("0", "OFF", "false", "no"):
        monkeypatch.setenv(C.ENV, off)
        assert C.cache_dir() is None
        assert C.enable_compile_cache() is None
    monkeypatch.setenv(C.ENV, str(tmp_path / "mine"))
    assert C.cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize("arg", [True, False])
def test_enable_sets_jax_config_and_stores_programs(tmp_path, arg):
    """In a fresh process: the directory is JAX's cache dir and a compiled program lands there."""
    where = tmp_path / "cache"
    code = (
        "import os, jax, jax.numpy as jnp\n"
        "from scimpute._jax_cache import enable_compile_cache\n"
        f"got = enable_compile_cache({str(where)!r} if {arg} else None)\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "assert jax.config.jax_compilation_cache_dir == str(got), got\n"
        "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()\n"
        "print(got)\n"
    )
    env = {**__import__("os").environ, C.ENV: str(where), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(where)
    assert any(where.iterdir())  # the program was written
