"""The registry of evaluation protocols: a protocol is one module plus one entry of
rekd_jax.evaluation.protocols.PROTOCOLS (a toy one runs through main.py), and the random seed of
an evaluation config is rng_seed (the old spelling `seed` is one line naming it)."""

import json
import os

import pytest
from absl import flags
from commands import ROOT, run

from rekd_jax import app, cli, config_lookup
from rekd_jax.evaluation import common, protocols
from rekd_jax.evaluation import config as eval_config

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKPOINT = "init:resnet18:cifar_stem=true,width_multiplier=0.125"


def test_every_mode_of_the_registry_is_a_mode_with_its_block():
    config = eval_config.default_eval_config()
    for name, protocol in protocols.PROTOCOLS.items():
        assert protocol.NAME == name and name in app.modes()
        assert config[name].to_dict() == protocol.default_block().to_dict()


def test_a_protocol_in_one_module_runs_through_main_py(tmp_path):
    """tests/evaluation/toy_protocol.py plus one registry entry: a config file for it, the
    command line, validation, the workdir record and the closing summary come with it."""
    config_file = tmp_path / "centroid_eval.py"
    config_file.write_text(
        "from rekd_jax.recipes.evaluation import VARIANTS, get_protocol_config\n\n\n"
        "def get_config(arg=None):\n"
        "    return get_protocol_config('centroid', 'tiny', arg, 'centroid_eval.py')\n"
    )
    workdir = tmp_path / "eval_centroid"
    code = (
        f"import runpy, sys; sys.path.insert(0, {HERE!r}); import toy_protocol; "
        "from rekd_jax.evaluation import protocols; "
        "protocols.PROTOCOLS[toy_protocol.NAME] = toy_protocol; "
        f"sys.argv = ['main.py', '--config={config_file}:runlocal', '--workdir={workdir}', "
        f"'--config.checkpoint={CHECKPOINT}', '--config.tensorboard=off', '--xla_cache=off']; "
        f"runpy.run_path({os.path.join(ROOT, 'main.py')!r}, run_name='__main__')"
    )
    shared = {"tfds": str(tmp_path / "tfds"), "cache": str(tmp_path / "cache")}
    result = run(shared, "-c", code, extra_env={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((workdir / "results_centroid.json").read_text())
    assert saved["mode"] == "centroid" and saved["count"] == 100  # the whole toy test split
    assert 0.0 <= saved["top1"] <= saved["top5"] <= 100.0
    assert json.loads((workdir / "config.json").read_text())["centroid"] == {"normalise": True}
    assert "centroid evaluation done: top-1" in result.stdout


def test_the_old_seed_field_of_an_evaluation_config_names_rng_seed():
    values = flags.FlagValues()
    argv = ["main.py", "--config=knn_eval:tiny,runlocal", "--workdir=w", "--config.seed=3"]
    with pytest.raises(cli.FlagError, match=r"config\.seed is now config\.rng_seed"):
        cli.parse(argv, values)
    config = config_lookup.load_config("knn_eval:tiny,runlocal")
    config.checkpoint = CHECKPOINT
    config.seed = 3  # a Python caller's old spelling
    with pytest.raises(ValueError, match=r"config\.seed=3: .*config\.rng_seed") as error:
        eval_config.validate(config)
    assert "\n" not in str(error.value)


def test_probe_checkpoints_keep_the_key_of_their_seed():
    """The signature stored in probe checkpoints keeps its key 'seed', so a probe written
    before the field became rng_seed resumes."""
    config = config_lookup.load_config("linear_eval:tiny,runlocal")
    config.checkpoint = CHECKPOINT
    config.rng_seed = 5
    assert common.signature(config, config.linear)["seed"] == 5
