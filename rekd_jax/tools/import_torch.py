"""Import a PyTorch checkpoint as an encoder checkpoint (rekd_jax.models.io).

    python -m rekd_jax.tools.import_torch --arch resnet50 --src moco_v2_200ep_pretrain.pth.tar \
        --dst /tmp/encoders/mocov2_r50 [--format auto|torchvision|mocov2|swav] \
        [--override cifar_stem=true ...] [--overwrite] [--debug]

The encoder is written atomically (built beside --dst, renamed into place); an existing --dst
is replaced only with --overwrite. Expected failures (a missing, corrupt or untrusted file, a
checkpoint that does not fit --arch, an unwritable --dst) print one FATAL line.

Formats ('auto' detects them):
- torchvision: a plain torchvision state_dict. A classifier (ResNet ``fc``, AlexNet
  ``classifier``, ...) is kept and the spec records its ``num_classes``; without one the model is
  built with num_classes=0.
- mocov2: MoCo v1/v2 (``module.encoder_q.`` keys). The v2 MLP head ``fc.0``/``fc.2`` becomes the
  projector; MoCo v1's single-Linear ``fc`` head is dropped (backbone only). ``encoder_k``,
  ``queue`` and ``queue_ptr`` are ignored.
- swav: SwAV (``module.`` keys); ``projection_head`` (Linear-BN-ReLU-Linear) becomes the
  projector with BN, ``prototypes`` are ignored.
Wrappers ``{'state_dict': ...}`` or ``{'model': ...}`` are unwrapped. Torch is imported only by
the file loader; ``convert`` takes a dict of numpy arrays or tensors.
"""

from __future__ import annotations

# First: run as a command, Ctrl-C ends it with one line from here on, the imports included.
from rekd_jax.core import interrupts  # noqa: F401

# isort: split
import argparse
import importlib.util
import json
import logging
import os
import pickle
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from rekd_jax import models
from rekd_jax.core import errors, fileio, invocation
from rekd_jax.core import logging as logging_lib
from rekd_jax.models import heads, io

FORMATS = ("auto", "torchvision", "mocov2", "swav")
TORCH_MISSING = (
    "FATAL: ModuleNotFoundError: importing a PyTorch checkpoint needs PyTorch, which this Python "
    "cannot import (No module named 'torch'); install it with pip install torch (or pip install "
    '".[torch]" from the clone)'
)
MOCO_PREFIXES = ("module.encoder_q.", "encoder_q.")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if not value.dtype.is_floating_point:
            return value.numpy()
        return value.float().numpy()
    return np.asarray(value)


def unwrap(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The state_dict inside a ``{'state_dict': ...}`` or ``{'model': ...}`` wrapper (or the
    argument itself)."""
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            return dict(checkpoint[key])
    return dict(checkpoint)


def detect_format(state_dict: Mapping[str, Any]) -> str:
    """'mocov2' (encoder_q keys), 'swav' (projection_head/prototypes keys) or 'torchvision'."""
    keys = list(state_dict)
    if any(key.startswith(MOCO_PREFIXES) for key in keys):
        return "mocov2"
    if any(
        key.split(".")[1 if key.startswith("module.") else 0] in ("projection_head", "prototypes")
        for key in keys
    ):
        return "swav"
    return "torchvision"


def _strip(prefix: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)
    }


def _split(
    state_dict: Mapping[str, Any], fmt: str
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(backbone tensors by torch key, projector tensors by (Projector submodule, torch leaf),
    ignored keys)."""
    if fmt == "mocov2":
        prefix = next((p for p in MOCO_PREFIXES if any(k.startswith(p) for k in state_dict)), None)
        if prefix is None:
            raise ValueError(
                f"Format mocov2 needs keys starting with {MOCO_PREFIXES}; "
                f"got e.g. {list(state_dict)[:3]}."
            )
        tensors = _strip(prefix, state_dict)
        ignored = sorted(k for k in state_dict if not k.startswith(prefix))
        head_keys = {"hidden": "fc.0", "out": "fc.2"}
        if "fc.weight" in tensors:  # MoCo v1: a single Linear head, not a projector
            ignored += ["fc.weight", "fc.bias"]
            tensors = {k: v for k, v in tensors.items() if k not in ("fc.weight", "fc.bias")}
    elif fmt == "swav":
        tensors = (
            _strip("module.", state_dict)
            if all(k.startswith("module.") for k in state_dict)
            else dict(state_dict)
        )
        ignored = sorted(k for k in tensors if k.startswith("prototypes"))
        tensors = {k: v for k, v in tensors.items() if not k.startswith("prototypes")}
        head_keys = {
            "hidden": "projection_head.0",
            "bn": "projection_head.1",
            "out": "projection_head.3",
        }
    elif fmt == "torchvision":
        tensors = (
            _strip("module.", state_dict)
            if all(k.startswith("module.") for k in state_dict)
            else dict(state_dict)
        )
        ignored, head_keys = [], {}
    else:
        raise ValueError(f"Unknown checkpoint format {fmt!r}; use one of {', '.join(FORMATS)}.")
    head_prefixes = tuple(p + "." for p in head_keys.values())
    head = {k: v for k, v in tensors.items() if k.startswith(head_prefixes)}
    backbone = {k: v for k, v in tensors.items() if not k.startswith(head_prefixes)}
    ignored += [k for k in backbone if k.endswith("num_batches_tracked")] + [
        k for k in head if k.endswith("num_batches_tracked")
    ]
    backbone = {k: v for k, v in backbone.items() if not k.endswith("num_batches_tracked")}
    projector = {}
    for flax_name, torch_name in head_keys.items():
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            key = f"{torch_name}.{leaf}"
            if key in head:
                projector[(flax_name, leaf)] = head[key]
    if head and head_keys and ("hidden", "weight") not in projector:
        raise ValueError(
            f"Unrecognised {fmt} projection head keys {sorted(head)[:6]}; expected {head_keys}."
        )
    return backbone, projector, ignored


_PARAM_LEAVES = {"kernel": "weight", "bias": "bias", "scale": "weight"}
_STAT_LEAVES = {"mean": "running_mean", "var": "running_var"}


def _torch_layout(flax_leaf: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The permutation that takes a torch tensor to this Flax leaf (None: as is)."""
    if flax_leaf == "kernel" and len(shape) == 4:
        return (2, 3, 1, 0)  # (O, I, H, W) -> (H, W, I, O)
    if flax_leaf == "kernel" and len(shape) == 2:
        return (1, 0)  # (O, I) -> (I, O)
    return None


def _fill(
    template: Mapping[str, Any], torch_name, tensors: Mapping[str, Any], path=()
) -> tuple[dict, list, list]:
    """Fill a Flax variable tree of ShapeDtypeStructs from torch tensors.

    Returns (tree, missing torch keys, mis-shaped descriptions); used torch keys are popped from
    ``tensors``.
    """
    tree, missing, misshaped = {}, [], []
    for key, value in template.items():
        if isinstance(value, Mapping):
            tree[key], sub_missing, sub_misshaped = _fill(value, torch_name, tensors, path + (key,))
            missing += sub_missing
            misshaped += sub_misshaped
            continue
        torch_leaf = {**_PARAM_LEAVES, **_STAT_LEAVES}.get(key)
        if torch_leaf is None:
            raise ValueError(
                f"Flax leaf {'/'.join(path + (key,))} has no torch equivalent in the converter."
            )
        torch_key = f"{torch_name(path)}.{torch_leaf}"
        if torch_key not in tensors:
            missing.append(torch_key)
            continue
        array = _to_numpy(tensors.pop(torch_key))
        torch_shape = tuple(array.shape)
        permutation = _torch_layout(key, tuple(value.shape))
        if permutation is not None and array.ndim == len(permutation):
            array = np.transpose(array, permutation)
        if tuple(array.shape) != tuple(value.shape):
            misshaped.append(f"{torch_key}: torch {torch_shape}, Flax {tuple(value.shape)}")
            continue
        tree[key] = np.array(array, dtype=np.float32, copy=True)  # never alias torch memory
    return tree, missing, misshaped


def _classifier_classes(arch: str, overrides: Mapping[str, Any], tensors: Mapping[str, Any]) -> int:
    """Classes of the classifier stored in ``tensors`` (0 if none): the torch tensor that maps to
    the one kernel of width 1 when the model is built with num_classes=1."""
    spec = {"arch": arch, "overrides": {**overrides, "num_classes": 1}, "projector": None}
    shapes = heads.encoder_variable_shapes(spec)["params"]["backbone"]
    torch_name = models.model_family(arch).torch_module_name

    def output_layers(tree, path=()):
        for key, value in tree.items():
            if isinstance(value, Mapping):
                yield from output_layers(value, path + (key,))
            elif key == "kernel" and value.ndim == 2 and value.shape[-1] == 1:
                yield f"{torch_name(path)}.weight"

    for key in output_layers(shapes):
        if key in tensors:
            return int(_to_numpy(tensors[key]).shape[0])
    return 0


def _check_overrides(arch: str, overrides: Mapping[str, Any]) -> None:
    """ValueError naming the problem when `arch` with `overrides` is not a model (an unknown
    arch or field, a value of the wrong type), before any conversion work."""
    fields = {**overrides, "num_classes": 0}
    models.get_model(arch, **fields)  # unknown arch / fields -> ValueError
    try:
        heads.encoder_variable_shapes({"arch": arch, "overrides": fields, "projector": None})
    except TypeError as error:
        raise ValueError(
            f"the model overrides {dict(overrides)} do not fit {arch!r} ({error}); "
            "give --override values of the field's type (JSON, e.g. "
            "width_multiplier=0.5, cifar_stem=true)."
        ) from None


def convert_checkpoint(
    checkpoint: Mapping[str, Any], arch: str, fmt: str = "auto", **overrides: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec without 'source', variables) for a PyTorch checkpoint; see ``convert``."""
    _check_overrides(arch, overrides)
    state_dict = _state_dict(checkpoint)
    if fmt == "auto":
        fmt = detect_format(state_dict)
    backbone_tensors, projector_tensors, ignored = _split(state_dict, fmt)
    if "num_classes" not in overrides:
        overrides["num_classes"] = (
            _classifier_classes(arch, overrides, backbone_tensors) if fmt == "torchvision" else 0
        )
    projector = None
    if projector_tensors:
        hidden = _to_numpy(projector_tensors[("hidden", "weight")]).shape[0]
        out = (
            _to_numpy(projector_tensors[("out", "weight")]).shape[0]
            if ("out", "weight") in projector_tensors
            else 0
        )
        projector = {
            "hidden": int(hidden),
            "dim": int(out),
            "bn": ("bn", "weight") in projector_tensors,
        }
    spec = {"arch": arch, "overrides": dict(overrides), "projector": projector}
    shapes = heads.encoder_variable_shapes(spec)
    family = models.model_family(arch)

    # Backbone: every Flax leaf from its torch tensor.
    remaining = dict(backbone_tensors)
    variables: dict[str, dict[str, Any]] = {"params": {}, "batch_stats": {}}
    missing, misshaped = [], []
    for collection in ("params", "batch_stats"):
        if "backbone" in shapes[collection]:
            tree, m, s = _fill(shapes[collection]["backbone"], family.torch_module_name, remaining)
            variables[collection]["backbone"] = tree
            missing += m
            misshaped += s
    unexpected = sorted(remaining)
    if projector is not None:
        head_tensors = {
            f"{name}.{leaf}": value for (name, leaf), value in projector_tensors.items()
        }
        for collection in ("params", "batch_stats"):
            if "projector" in shapes[collection]:
                tree, m, s = _fill(
                    shapes[collection]["projector"], lambda path: ".".join(path), head_tensors
                )
                variables[collection]["projector"] = tree
                missing += [f"projector {key}" for key in m]
                misshaped += [f"projector {key}" for key in s]
        unexpected += [f"projector {key}" for key in sorted(head_tensors)]
    if missing or unexpected or misshaped:
        raise ValueError(
            f"The {fmt} checkpoint does not fit {arch!r} with overrides {overrides}: "
            f"missing {missing[:5]} ({len(missing)} in all), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), "
            f"mis-shaped {misshaped[:5]} ({len(misshaped)}). Check --arch and the model overrides "
            "(e.g. cifar_stem, width_multiplier, use_bn)."
        )
    if ignored:
        logging.info("import_torch: ignored %d keys, e.g. %s", len(ignored), ignored[:5])
    return spec, variables


def convert(
    state_dict: Mapping[str, Any], arch: str, fmt: str = "auto", **overrides: Any
) -> dict[str, Any]:
    """Flax variables (float32 numpy, the Encoder layout ``{'params': {'backbone', 'projector'?},
    'batch_stats': {...}}``) for a PyTorch checkpoint dict (numpy arrays or tensors, possibly
    wrapped). ``fmt``: 'auto', 'torchvision', 'mocov2' or 'swav'. ``overrides`` are model fields
    (e.g. cifar_stem=True, use_bn=False); a torchvision classifier sets num_classes unless given.
    A checkpoint that does not fit raises ValueError listing missing, unexpected and mis-shaped
    keys."""
    return convert_checkpoint(state_dict, arch, fmt, **overrides)[1]


# torch.save writes a zip archive (PyTorch >= 1.6) or, in the legacy format, a pickle, which
# starts with the PROTO opcode.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def load_torch_file(path: str, trust_pickle: bool = False) -> Mapping[str, Any]:
    """Read a .pth/.pth.tar file with torch (weights only unless ``trust_pickle``). ValueError
    for a file that is not a PyTorch checkpoint, or is damaged, or (without ``trust_pickle``)
    holds Python objects beyond tensors."""
    import torch  # only the file loader needs torch

    if not os.path.exists(path):
        raise FileNotFoundError(f"No PyTorch checkpoint at {path}.")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(_TORCH_MAGIC):
        raise ValueError(
            f"{path} is not a PyTorch checkpoint (neither torch.save's zip format "
            f"nor a pickle: it starts with {head!r}); check --src."
        )
    logging.info("loading %s", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        first_line = (str(error).splitlines() or [""])[0]
        if not trust_pickle and "Unsupported global" in str(error):  # objects in the pickle
            raise ValueError(
                f"torch.load(weights_only=True) refused {path}: it holds Python objects beyond "
                "tensors, which can run code when loaded; if you trust the file, rerun with "
                "--trust_pickle."
            ) from None
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({first_line[:200]}); the "
            "file is truncated or corrupt: download or export it again."
        ) from None
    except (RuntimeError, EOFError, KeyError, IndexError, UnicodeDecodeError) as error:
        # torch's zip reader (RuntimeError) and legacy unpickler (EOFError, KeyError,
        # IndexError) on truncated or foreign bytes
        first_line = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: "
            f"{first_line}); the file is truncated or corrupt: download or export "
            "it again."
        ) from None


def _state_dict(checkpoint: Any) -> dict[str, Any]:
    """The state_dict of a loaded checkpoint (unwrapped); ValueError when it holds something
    else (a tensor, a list, keys that are not parameter names)."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"the checkpoint holds a {type(checkpoint).__name__}, not a state_dict "
            "(a dict of parameter names to tensors, possibly under 'state_dict' or "
            "'model'); save model.state_dict() instead."
        )
    state_dict = unwrap(checkpoint)
    odd = [k for k in state_dict if not isinstance(k, str)]
    if odd:
        raise ValueError(
            f"the checkpoint's keys must be parameter names (strings); it has "
            f"{type(odd[0]).__name__} keys such as {odd[0]!r}; save "
            "model.state_dict() instead."
        )
    return state_dict


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"--override expects KEY=VALUE (VALUE as JSON); got {text!r}."
        )
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string such as dtype=bfloat16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rekd_jax.tools.import_torch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--arch", required=True, help=f"model name: {', '.join(models.list_models())}"
    )
    parser.add_argument("--src", required=True, help="PyTorch checkpoint file (.pth, .pth.tar)")
    parser.add_argument("--dst", required=True, help="output encoder checkpoint directory")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        type=_parse_override,
        metavar="KEY=VALUE",
        help="model field override, VALUE as JSON (e.g. cifar_stem=true, use_bn=false); repeatable",
    )
    parser.add_argument(
        "--trust_pickle", action="store_true", help="allow torch.load(weights_only=False)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --dst (atomically)"
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one FATAL line")
    args = parser.parse_args(argv)
    logging_lib.setup_console()

    def run():
        if importlib.util.find_spec("torch") is None:  # before anything is read or written
            raise SystemExit(TORCH_MISSING)
        if fileio.exists(args.dst) and not args.overwrite:  # before the slow part
            raise fileio.AlreadyExistsError(
                f"--dst {args.dst} already exists; pass --overwrite to replace it"
            )
        if not fileio.is_remote(args.dst):  # unwritable: fail now (a bucket has no folders)
            os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
        checkpoint = load_torch_file(args.src, args.trust_pickle)
        fmt = detect_format(_state_dict(checkpoint)) if args.format == "auto" else args.format
        spec, variables = convert_checkpoint(checkpoint, args.arch, fmt, **dict(args.override))
        spec["source"] = f"import_torch:{fmt}:{os.path.abspath(args.src)}"
        io.save_encoder(args.dst, spec, variables, overwrite=args.overwrite)
        print(
            f"Wrote encoder checkpoint {args.dst}: arch={args.arch} overrides={spec['overrides']} "
            f"projector={spec['projector']} (format {fmt})\n"
            f"Next: evaluate it ({invocation.entry_command()} --config="
            f"{invocation.config_argument('linear_eval')} "
            f"--config.checkpoint={args.dst} --workdir=WORKDIR) or distil from it "
            f"(--config.teacher.checkpoint={args.dst} with an offline ReKD or SEED config)"
        )

    return errors.run_cli(run, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
