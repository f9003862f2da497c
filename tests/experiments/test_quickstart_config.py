"""The quick start's config (configs/quickstart.py): its variants change the whole plan through
rekd_jax.variants.apply_variants, in any order, and one seed field reseeds every stage."""

import itertools

import pytest
from absl import flags

from configs import quickstart
from rekd_jax import cli, cli_help


def _steps(config) -> dict[str, tuple[int, int, int]]:
    return {
        name: (run.num_train_steps, run.log_every_steps, run.checkpoint_every_steps)
        for name, run in config.runs.items()
    }


def test_every_order_of_the_variants_gives_the_same_plan():
    for count in range(2, len(quickstart.VARIANTS) + 1):
        for names in itertools.combinations(quickstart.VARIANTS, count):
            plans = [
                quickstart.get_config(",".join(p)).to_dict() for p in itertools.permutations(names)
            ]
            assert all(p == plans[0] for p in plans), names


def test_tiny_and_x4_shrink_and_lengthen_the_stages_together():
    assert _steps(quickstart.get_config()) == {
        "teacher": (1700, 170, 1700),
        "student": (700, 70, 700),
        "seed": (700, 70, 700),
        "baseline": (700, 70, 700),
    }
    tiny_x4 = quickstart.get_config("x4,tiny")
    assert _steps(tiny_x4) == {
        "teacher": (6, 1, 6),
        "student": (24, 2, 24),
        "seed": (24, 2, 24),
        "baseline": (24, 2, 24),
    }
    for run in tiny_x4.runs.values():
        assert run.data.dataset == "rekd_shapes/tiny"
        assert run.global_batch_size == run.optimizer.lr_scaling_batch == 16
        assert run.mocov2.queue_size == run.seed.queue_size == run.rekd.queue_size == 128
    assert tiny_x4.evaluation.data.dataset == "rekd_shapes/tiny"
    assert tiny_x4.evaluation.data.image_size == 16  # the students' views, not the teacher's
    assert (tiny_x4.evaluation.eval_batch_size, tiny_x4.evaluation.linear.epochs) == (16, 2)
    grid = quickstart.get_config("lr_grid")
    assert grid.mode == "quickstart_grid" and tuple(grid.lr_grid) == quickstart.LR_GRID
    assert tuple(quickstart.get_config("lr_grid,tiny").lr_grid) == quickstart.LR_GRID[:2]
    assert "lr_grid" not in quickstart.get_config("tiny")


def test_one_seed_field_reseeds_every_stage():
    config = quickstart.get_config("tiny,seeds,x4")
    assert tuple(config.rng_seeds) == quickstart.SEEDS
    assert tuple(quickstart.get_config("tiny").rng_seeds) == ()
    config.rng_seed = 7
    assert {run.rng_seed for run in config.runs.values()} == {7}


def test_the_old_seed_override_names_the_new_field(tmp_path):
    argv = [
        "main.py",
        "--config=configs/quickstart.py:tiny",
        f"--workdir={tmp_path}",
        "--config.seed=3",
    ]
    with pytest.raises(cli.FlagError) as error:
        cli.parse(argv, flags.FlagValues())
    message = str(error.value)
    assert "\n" not in message and "--config.rng_seed" in message


def test_the_help_describes_each_variant():
    text = " ".join(cli_help.help_text().split())
    for function in quickstart.VARIANTS.values():
        assert " ".join(function.__doc__.split()) in text
