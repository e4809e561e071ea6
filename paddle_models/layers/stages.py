"""The four-stage layout of VAN, MSCAN and MiT: per stage a patch embedding ``patch_embed{i}``, a list of blocks
``block{i}`` and an output norm ``norm{i}`` (1-based; the releases' parameter names), with stochastic depth rising
linearly over all blocks of the network."""
import paddle.nn as nn

from paddle_models.layers.drop_path import drop_path_rates

__all__ = ['build_stages', 'stage_layers', 'run_stages']


def build_stages(owner, depths, drop_path_rate, embed, block, norm):
    """Add ``patch_embed{i}``, ``block{i}`` (an ``nn.LayerList``) and ``norm{i}`` to the layer ``owner`` for every
    stage, in that order (the order the releases create them, hence draw their initial weights).

    Args:
        owner (nn.Layer): The backbone.
        depths (list[int]): Blocks per stage.
        drop_path_rate (float): Stochastic depth of the network's last block (0 at the first).
        embed (callable): ``embed(i)`` builds the patch embedding of stage ``i`` (0-based).
        block (callable): ``block(i, rate)`` builds one block of stage ``i`` with stochastic depth ``rate``.
        norm (callable): ``norm(i)`` builds the output norm of stage ``i``.
    """
    for i, rates in enumerate(drop_path_rates(drop_path_rate, depths)):
        setattr(owner, f'patch_embed{i + 1}', embed(i))
        setattr(owner, f'block{i + 1}', nn.LayerList([block(i, rate) for rate in rates]))
        setattr(owner, f'norm{i + 1}', norm(i))
    owner.num_stages = len(depths)


def stage_layers(owner):
    """[(patch_embed, blocks, norm)] per stage of a backbone built by :func:`build_stages`."""
    return [(getattr(owner, f'patch_embed{i}'), getattr(owner, f'block{i}'), getattr(owner, f'norm{i}'))
            for i in range(1, owner.num_stages + 1)]


def run_stages(owner, x):
    """The stage outputs of an NCHW backbone built by :func:`build_stages`: per stage x = norm(blocks(embed(x)))."""
    outs = []
    for embed, blocks, norm in stage_layers(owner):
        x = embed(x)
        for block in blocks:
            x = block(x)
        x = norm(x)
        outs.append(x)
    return outs
