"""Encoder checkpoints: the format shared by pre-training, the PyTorch importer and evaluation.

A checkpoint is a directory holding

- ``variables/``: an Orbax (StandardCheckpointer) checkpoint of
  ``{'params': {'backbone': ..., 'projector': ...}, 'batch_stats': {'backbone': ..., ...}}``
  with float32 numpy leaves (``projector`` absent for backbone-only checkpoints);
- ``spec.json``: ``{'arch': str, 'overrides': dict,
  'projector': {'hidden', 'dim', 'bn'[, 'layers']} | None, 'source': str}``; ``overrides`` are
  model fields (num_classes defaults to 0 here; > 0 means the backbone variables include that
  classifier). ``heads.build_encoder(spec)`` makes the module. ``spec.json`` is written last,
  so its presence marks a complete checkpoint.

Saving is atomic: the checkpoint is built in a folder beside the target and renamed into place
(``rekd_jax.core.fileio.atomic_dir``), so an existing encoder stays valid until the new one is
complete, and a kill or full disk never leaves neither.

Produced by pre-training (``WORKDIR/encoders/student``, ``WORKDIR/encoders/teacher``) and by
``python -m rekd_jax.tools.import_torch``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from rekd_jax.core import fileio, workdir_lock
from rekd_jax.models.heads import encoder_variable_shapes

SPEC_FILE = "spec.json"
VARIABLES_DIR = "variables"
HOW_TO_PRODUCE = (
    "Produce an encoder checkpoint by pre-training (`python main.py --config=configs/<recipe>.py "
    "--workdir=W` exports W/encoders/student and W/encoders/teacher) or by importing a PyTorch "
    "checkpoint (`python -m rekd_jax.tools.import_torch --arch resnet50 --src FILE.pth --dst DIR`)."
)


def validate_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A checked, JSON-round-tripped copy of an encoder spec; ValueError naming the problem."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"Encoder spec must be a dict; got {type(spec).__name__}.")
    missing = [key for key in ("arch", "overrides", "projector", "source") if key not in spec]
    if missing:
        raise ValueError(
            f"Encoder spec lacks {missing}; expected keys arch, overrides, projector, source."
        )
    if not isinstance(spec["arch"], str) or not isinstance(spec["overrides"], Mapping):
        raise ValueError(
            "Encoder spec: 'arch' must be a model name and 'overrides' a dict of model fields."
        )
    projector = spec["projector"]
    if projector is not None and (
        not isinstance(projector, Mapping)
        or set(projector) - {"layers"} != {"hidden", "dim", "bn"}
        or projector.get("layers", 2) not in (1, 2)
    ):
        raise ValueError(
            f"Encoder spec: 'projector' must be None or {{'hidden', 'dim', 'bn'[, 'layers' 1|2]}}; "
            f"got {projector!r}."
        )
    try:
        return json.loads(json.dumps(dict(spec)))
    except TypeError as error:
        raise ValueError(
            f"Encoder spec is not JSON-able ({error}); "
            "write dtypes as strings, e.g. dtype='bfloat16'."
        ) from None


def _to_numpy_float32(tree: Any) -> Any:
    def convert(leaf):
        array = np.asarray(jax.device_get(leaf))
        return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array

    return jax.tree.map(convert, tree)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def check_variables(spec: Mapping[str, Any], variables: Mapping[str, Any]) -> None:
    """ValueError listing the first missing, unexpected and mis-shaped leaves when ``variables``
    do not fit the architecture that ``spec`` describes."""
    expected = _flatten(encoder_variable_shapes(spec))
    actual = _flatten(variables)
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    misshaped = sorted(
        f"{path}: {tuple(np.shape(actual[path]))} vs expected {tuple(expected[path].shape)}"
        for path in set(expected) & set(actual)
        if tuple(np.shape(actual[path])) != tuple(expected[path].shape)
    )
    if missing or unexpected or misshaped:
        raise ValueError(
            f"Encoder variables do not fit arch {spec['arch']!r} "
            f"with overrides {dict(spec['overrides'])} "
            f"and projector {spec['projector']}: missing {missing[:5]} ({len(missing)} in all), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), "
            f"mis-shaped {misshaped[:5]} ({len(misshaped)})."
        )


def save_encoder(
    directory: str | os.PathLike,
    spec: Mapping[str, Any],
    variables: Mapping[str, Any],
    *,
    overwrite: bool = True,
    flag: str = "--overwrite",
) -> None:
    """Write an encoder checkpoint atomically (see the module docstring). An existing one is
    replaced only with ``overwrite`` (else fileio.AlreadyExistsError naming ``flag``).
    ``variables`` must be host-local (unreplicated) arrays; they are stored as float32 numpy
    arrays. Call it from every process in multi-host runs (Orbax coordinates); only process 0
    writes spec.json and renames the result into place."""
    spec = validate_spec(spec)
    variables = _to_numpy_float32(
        {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    )
    check_variables(spec, variables)
    primary = jax.process_index() == 0
    # Every process must name the same folder: the default tag (pid.host) only works alone.
    tag = None if jax.process_count() == 1 else f"jax{jax.process_count()}.shared"
    with fileio.atomic_dir(
        os.fspath(directory),
        overwrite=overwrite,
        what="encoder checkpoint",
        flag=flag,
        primary=primary,
        tag=tag,
    ) as tmp:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(epath.Path(tmp) / VARIABLES_DIR, variables, force=True)
        checkpointer.wait_until_finished()
        if primary:
            fileio.write_text(
                os.path.join(tmp, SPEC_FILE), json.dumps(spec, indent=2, sort_keys=True)
            )


def fingerprint(directory: str | epath.PathLike) -> str:
    """A short hash of what an encoder computes: its architecture (arch, overrides,
    projector) and every variable's dtype, shape and bytes; the same for a copy or a
    re-export of the same weights, different for any other encoder."""
    spec, variables = load_encoder(directory)
    digest = hashlib.sha256(
        json.dumps(
            {k: spec[k] for k in ("arch", "overrides", "projector")}, sort_keys=True
        ).encode()
    )
    for path, array in sorted(_flatten(variables).items()):
        array = np.ascontiguousarray(array)
        digest.update(f"{path} {array.dtype} {array.shape}".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()[:16]


class EncoderBusyError(workdir_lock.WorkdirBusyError):
    """The encoder cannot be read while another process (named) is rewriting it: the workdir
    that holds it is busy."""


def _writer(directory: epath.Path) -> dict | None:
    """The live run (not this process) that holds the lock of the pre-training workdir an
    encoder belongs to (WORKDIR/encoders/<part>), if any."""
    if directory.parent.name != "encoders":
        return None
    holder = workdir_lock.lock_holder(os.fspath(directory.parent.parent))
    return holder if holder and holder.get("pid") != os.getpid() else None


def load_encoder(
    directory: str | epath.PathLike, *, retries: int = 3
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read an encoder checkpoint: ``(spec, variables)`` with float32 numpy leaves. A missing or
    malformed directory raises FileNotFoundError / ValueError saying how to produce one. While
    the pre-training run that exports it is running, a failed read is retried (the export
    replaces the folder atomically, but a read can straddle the swap), and EncoderBusyError
    names that run when the read still fails."""
    directory = epath.Path(directory).absolute()
    for attempt in range(retries + 1):
        try:
            return _load_encoder(directory)
        except (OSError, ValueError) as error:
            holder = _writer(directory)
            if holder is None:
                raise
            if attempt == retries:
                first_line = (str(error).splitlines() or [""])[0][:200]
                raise EncoderBusyError(
                    f"cannot read encoder {directory} while {workdir_lock.describe_holder(holder)} "
                    f"rewrites it ({type(error).__name__}: {first_line}); "
                    "evaluate it after that run finishes, or evaluate a copy of it"
                ) from None
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _load_encoder(directory: epath.Path) -> tuple[dict[str, Any], dict[str, Any]]:
    spec_path = directory / SPEC_FILE
    if not spec_path.exists() or not (directory / VARIABLES_DIR).exists():
        raise FileNotFoundError(
            f"No encoder checkpoint at {directory} (expected {SPEC_FILE} and {VARIABLES_DIR}/). "
            + HOW_TO_PRODUCE
        )
    try:
        spec = validate_spec(json.loads(spec_path.read_text()))
    except (json.JSONDecodeError, ValueError) as error:
        raise ValueError(
            f"Malformed encoder checkpoint at {directory}: {error} " + HOW_TO_PRODUCE
        ) from None
    restored = ocp.StandardCheckpointer().restore(directory / VARIABLES_DIR)
    variables = {
        "params": restored.get("params", {}),
        "batch_stats": restored.get("batch_stats", {}),
    }
    check_variables(spec, variables)
    return spec, variables
