"""Test-wide setup: four fake CPU devices so that pmap code runs for real, and one persistent
XLA compilation cache for the session (tests compile the same tiny models and steps many
times; a cache hit replaces a recompilation and changes no result)."""

import atexit
import gc
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="rekd-jax-tests-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_functions():
    """Drops the compiled functions of a test module once it is done: one pytest process runs
    hundreds of pmapped steps, and holding all of them only grows its memory."""
    yield
    jax.clear_caches()
    gc.collect()
