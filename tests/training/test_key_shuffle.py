"""Shuffle-BN of the key encoders (step.shuffled_key_forward) on 4 fake devices, both modes of
config.key_shuffle: the un-shuffle gives every example its own embedding, the BN groups have the
sizes and members the mode promises (under 'ppermute' b/(P S) images of each of P
consecutive devices), BN statistics are averaged over groups and devices, and the full pmapped
train step runs with each mode (identical losses for a BN-free encoder, where the modes must
agree)."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from rekd_jax import recipes
from rekd_jax.training import config as config_lib
from rekd_jax.training import optim
from rekd_jax.training import state as state_lib
from rekd_jax.training import step as step_lib

D = 4


class GroupMean(nn.Module):
    """A BatchNorm-like layer that shows its statistics: embedding = [x, mean of x over the
    group it ran with]; its batch_stats 'mean' becomes that group mean (momentum 0)."""

    @nn.compact
    def __call__(self, x, train):
        x = x.reshape((x.shape[0], -1))
        mean = x.mean(0)
        ra = self.variable("batch_stats", "mean", jnp.zeros, x.shape[1:])
        if train and not self.is_initializing():
            ra.value = mean
        return {"embedding": jnp.concatenate([x, jnp.broadcast_to(mean, x.shape)], axis=1)}


def _needs_devices():
    if jax.device_count() < D:
        pytest.skip("needs 4 (fake) devices: tests/conftest.py sets XLA_FLAGS")


def _step_config(shuffle, batch, splits, spread=0, num_devices=D):
    config = default.get_config()
    config.update(
        key_shuffle=shuffle,
        key_shuffle_devices=spread,
        key_bn_splits=splits,
        global_batch_size=batch,
    )
    config_lib.check_devices(config, num_devices)
    return step_lib.make_step_config(config, None, None, None, batch, num_devices)


def _run_shuffle(cfg, x, seed=0):
    module = GroupMean()
    variables = module.init(jax.random.PRNGKey(0), x[:2], train=False)
    f = jax.pmap(
        lambda xs, rng: step_lib.shuffled_key_forward(
            cfg, module, variables, xs, rng, jax.random.PRNGKey(1)
        ),
        axis_name="batch",
        in_axes=(0, None),
        devices=jax.devices()[: cfg.num_devices],
    )
    emb, stats = f(x.reshape((cfg.num_devices, -1) + x.shape[1:]), jax.random.PRNGKey(seed))
    return np.asarray(emb).reshape(x.shape[0], -1), np.asarray(stats["mean"])


@pytest.mark.parametrize(
    "shuffle,batch,splits,spread,expect",
    [
        ("ppermute", 32, 8, 0, 4),  # b=8, 2 splits per device, auto P=4: 1 image of each device
        ("ppermute", 48, 4, 3, 3),  # b=12, 1 split, P=3: 4 images of each of 3 devices
        ("ppermute", 32, 4, 2, 2),  # b=8, 1 split, P=2: 4 images of its own, 4 of the previous
        ("all_gather", 32, 8, 0, 0),
    ],
)
def test_unshuffle_is_exact_and_groups_are_as_promised(shuffle, batch, splits, spread, expect):
    _needs_devices()
    cfg = _step_config(shuffle, batch, splits, spread)
    assert cfg.key_shuffle_devices == expect
    x = np.random.RandomState(0).normal(size=(batch, 3)).astype(np.float32)
    emb, stats = _run_shuffle(cfg, x)
    # Every example gets its own embedding back.
    np.testing.assert_array_equal(emb[:, :3], x)
    # The rest is the mean of the BN group it was normalised with: groups of batch/splits.
    group_mean = emb[:, 3:]
    _, group_of, sizes = np.unique(
        group_mean.round(5), axis=0, return_inverse=True, return_counts=True
    )
    group_of = group_of.reshape(-1)
    assert len(sizes) == splits and set(sizes) == {batch // splits}
    for g in range(splits):
        np.testing.assert_allclose(
            x[group_of == g].mean(0), group_mean[group_of == g][0], rtol=1e-5, atol=1e-6
        )
    # BN statistics averaged over all groups and devices: identical replicas, the global mean.
    np.testing.assert_allclose(stats, np.broadcast_to(x.mean(0), stats.shape), atol=1e-6)
    home = np.arange(batch) // (batch // D)  # the device each example lives on
    b, s = batch // D, splits // D
    computing = []
    for g in range(splits):
        devices, counts = np.unique(home[group_of == g], return_counts=True)
        if shuffle == "ppermute":
            # b/(P S) images of each of the P devices i, i-1, .., i-P+1 (mod D), for the device
            # i that computed the group: a key's own device gives exactly 1/P of its group.
            assert len(devices) == expect and set(counts) == {b // (expect * s)}
            computing += [
                i for i in range(D) if set(devices) == {(i - k) % D for k in range(expect)}
            ]
        else:  # MoCo's shuffle: random groups, in general from more than one device
            computing.append(len(devices))
    if shuffle == "ppermute":
        if expect < D:  # s groups computed on every device (P = D: every group has all)
            assert sorted(computing) == sorted(list(range(D)) * s)
        emb1, _ = _run_shuffle(cfg, x, seed=1)  # another step rng: other groups
        np.testing.assert_array_equal(emb1[:, :3], x)
        assert not np.allclose(emb1[:, 3:], group_mean)
    else:
        assert max(computing) > 1


def test_bad_shuffle_fields_are_named():
    with pytest.raises(ValueError, match="config.key_shuffle='ring' is unknown.*'ppermute'"):
        _step_config("ring", 32, 4)
    with pytest.raises(ValueError, match="key_shuffle_devices=2 is only read by.*'ppermute'"):
        _step_config("all_gather", 32, 4, spread=2)
    with pytest.raises(ValueError, match=r"key_shuffle_devices=3 .*one of \[2, 4\]"):
        _step_config("ppermute", 32, 4, spread=3)
    with pytest.raises(ValueError, match=r"key_shuffle_devices=1 .*P must be in 2..4"):
        _step_config("ppermute", 32, 4, spread=1)  # P=1 would keep every query's group
    with pytest.raises(ValueError, match="key_shuffle_devices=0 .*change global_batch_size"):
        _step_config("ppermute", 20, 4)  # 5 images per device: no P in 2..4 divides them
    with pytest.raises(ValueError, match="there is one device"):
        _step_config("ppermute", 8, 1, spread=2, num_devices=1)
    config = default.get_config("tiny,runlocal")
    config.key_shuffle = "ppermute2"
    with pytest.raises(ValueError, match="config.key_shuffle="):
        config_lib.validate(config)
    # One device: no exchange, the in-device shuffle over the splits (the 'all_gather' code).
    assert _step_config("ppermute", 8, 2, num_devices=1).key_shuffle_devices == 0


GLOBAL_BATCH = 8


def _train_config(shuffle, arch, overrides):
    config = default.get_config("tiny,runlocal")
    config.update(
        method="mocov2", global_batch_size=GLOBAL_BATCH, key_bn_splits=4, key_shuffle=shuffle
    )
    recipes.set_queue_size(config, 4 * GLOBAL_BATCH)
    config.data.image_size = 32 if arch == "alexnet" else 16
    config.student.arch = arch
    config.student.overrides = overrides
    config.student.projector.dim = 16
    return config


def _train_step(config):
    modules = state_lib.build_modules(config)
    schedule = optim.learning_rate_schedule(config.optimizer, GLOBAL_BATCH, 10, 0)
    tx = optim.create_optimizer(config.optimizer, schedule)
    state = state_lib.create_train_state(config, modules, tx)
    cfg = step_lib.make_step_config(config, modules, tx, schedule, GLOBAL_BATCH, D)
    devices = jax.devices()[:D]
    p_step = jax.pmap(
        lambda s, b: step_lib.train_step(cfg, s, b, {}, None), axis_name="batch", devices=devices
    )
    rng = np.random.RandomState(0)
    size = config.data.image_size
    batch = {
        "image": rng.randint(0, 256, (D, GLOBAL_BATCH // D, size, size, 3)).astype(np.uint8),
        "label": rng.randint(0, 10, (D, GLOBAL_BATCH // D)).astype(np.int32),
    }
    new_state, metrics = p_step(flax.jax_utils.replicate(state, devices), batch)
    return cfg, state, new_state, jax.tree_util.tree_map(lambda v: np.asarray(v[0]), metrics)


def test_train_step_with_ppermute_shuffle_keeps_replicas_identical():
    """A key encoder with BatchNorm (AlexNet, the SSL variant): the step runs, moves the
    weights, and the averaged key-encoder BN statistics are the same on every device."""
    _needs_devices()
    cfg, init, after, metrics = _train_step(
        _train_config("ppermute", "alexnet", {"cifar_stem": True, "use_bn": True})
    )
    assert cfg.key_shuffle_devices == 2
    assert np.isfinite(metrics["loss"]) and metrics["loss"] > 0
    stats = jax.tree_util.tree_leaves(after.ema_batch_stats)
    assert stats and any(
        np.abs(np.asarray(a)[0] - b).max() > 0
        for a, b in zip(stats, jax.tree_util.tree_leaves(init.ema_batch_stats))
    )
    for leaf in stats:
        np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
    moved = jax.tree_util.tree_map(
        lambda a, b: np.abs(np.asarray(a) - b[0]).max(), init.params, after.params
    )
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-6


def test_modes_agree_without_batchnorm():
    """AlexNet without BN (torchvision's): keys do not depend on their group, so both shuffles
    must give the same keys and therefore the same loss and update."""
    _needs_devices()
    results = [
        _train_step(_train_config(shuffle, "alexnet", {"cifar_stem": True, "use_bn": False}))
        for shuffle in step_lib.KEY_SHUFFLES
    ]
    (_, _, gathered, m_gather), (cfg, _, permuted, m_permute) = results
    assert cfg.key_shuffle_devices == 2
    for name in m_gather:
        np.testing.assert_allclose(
            m_permute[name], m_gather[name], rtol=1e-5, atol=1e-6, err_msg=name
        )
    for a, b in zip(
        jax.tree_util.tree_leaves(gathered.params), jax.tree_util.tree_leaves(permuted.params)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
