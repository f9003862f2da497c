"""Config variants (`--config=configs/NAME.py:VARIANT,VARIANT`): one mechanism for every config.

A config file keeps a table `VARIANTS = {name: function(config) -> config}` (each function's
docstring is its one-line description in `python main.py --help`) and ends its get_config with
`apply_variants(config, arg, VARIANTS, "configs/NAME.py")`. The rules, the same in pre-training
and evaluation:

  * the variants apply in the order given, except `runlocal`, which always applies last (it
    shrinks whatever the others chose), so `runlocal,cifar10` equals `cifar10,runlocal`; a
    name given twice applies once, at its last place;
  * dataset variants (imagenet, cifar10, shapes, tiny) set the whole dataset block (DATASETS),
    so the last one given wins and none depends on the config's default;
  * `runlocal` shrinks steps, batches, widths and image sizes for a laptop CPU but keeps the
    dataset; `tiny` selects the embedded toy data (rekd_shapes/tiny, 200 train / 100 test
    images), so the smoke run of any recipe is `:tiny,runlocal`;
  * an unknown name is an error that lists the known ones.

A config whose get_config only builds a base config and applies its variants gets it from
`config_getter(build, VARIANTS, "configs/NAME.py")` (the ImageNet students share one builder).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ml_collections

SHRINK = "runlocal"

# config.data fields of each dataset variant (every field a dataset variant sets, so that they
# do not depend on each other or on the order).
# The 32 px datasets differ only in their name.
_SMALL = dict(
    train_split="train",
    eval_split="test",
    image_size=32,
    eval_resize=32,
    host_size=0,
    resident="auto",
    train_crop="device",
)
DATASETS = {
    "imagenet": dict(
        dataset="imagenet2012",
        train_split="train",
        eval_split="validation",
        image_size=224,
        eval_resize=256,
        host_size=256,
        resident="off",
        train_crop="host",
    ),
    "cifar10": dict(_SMALL, dataset="cifar10"),
    "shapes": dict(_SMALL, dataset="rekd_shapes"),
    "tiny": dict(_SMALL, dataset="rekd_shapes/tiny"),
}

DATASET_DOCS = {
    "imagenet": "ImageNet-1k (TFDS imagenet2012, prepared ArrayRecord): 224 px crops, resize 256",
    "cifar10": "CIFAR-10 at 32 px (prepare it with python -m rekd_jax.data.prepare)",
    "shapes": "the embedded rekd_shapes (10 classes, 10,000 train / 2,000 test, 32 px; built "
    "on first use, no download)",
    "tiny": "the embedded toy data rekd_shapes/tiny (200 train / 100 test images, 32 px)",
}


def set_dataset(data: ml_collections.ConfigDict, name: str) -> None:
    """Sets every dataset field of `config.data` to the preset `name` of DATASETS."""
    data.update(**DATASETS[name])


def order(names: list[str]) -> list[str]:
    """The application order: as given, `runlocal` last; a repeated name at its last place."""
    last_places = [n for i, n in enumerate(names) if n not in names[i + 1 :]]
    return sorted(last_places, key=lambda n: n == SHRINK)


def apply_variants(
    config: ml_collections.ConfigDict, arg: str | None, known: Mapping[str, Callable], file: str
) -> ml_collections.ConfigDict:
    """Applies the comma-separated variants of `arg` (see the module docstring for the rules)."""
    names = [n.strip() for n in (arg or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"{file}: unknown variant {unknown[0]!r}; use any of {sorted(known)} "
            f"(comma-separated, e.g. --config={file}:{sorted(known)[0]})"
        )
    for name in order(names):
        known[name](config)
    return config


def config_getter(
    build: Callable[[], ml_collections.ConfigDict], known: Mapping[str, Callable], file: str
) -> Callable[..., ml_collections.ConfigDict]:
    """The `get_config(arg=None)` of a config file whose config is `build()` with the variants
    of `arg` applied (apply_variants)."""

    def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
        return apply_variants(build(), arg, known, file)

    return get_config


def describe(known: Mapping[str, Callable]) -> list[tuple[str, str]]:
    """(name, first line of the function's docstring) of every variant, for --help."""
    out = []
    for name, function in known.items():
        doc = (function.__doc__ or "").strip().split("\n\n")[0]
        out.append((name, " ".join(doc.split())))
    return out
