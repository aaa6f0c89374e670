import pytest
import torch

from minidiff.unet import Attention, ResBlock, UNet


def small(**kw):
    torch.manual_seed(0)
    args = dict(in_channels=1, base_channels=16, channel_mults=(1, 2, 2), attention_levels=(2,))
    args.update(kw)
    return UNet(**args)


def test_output_shape_and_trace():
    u = small()
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([0, 10, 999])
    trace = []
    out = u(x, t, trace=trace)
    assert out.shape == x.shape
    names = [n for n, _ in trace]
    assert names[0] == "conv_in" and names[-1] == "conv_out"
    shapes = dict(trace)
    assert (3, 32, 7, 7) == shapes["middle ResBlock+Attention+ResBlock"]      # 28 -> 14 -> 7, widest level
    assert min(s[-1] for _, s in trace) == 7



def test_four_levels_round_trip_through_an_odd_size():
    # the small recipe's layout: 28 -> 14 -> 7 -> 4 on the way down, 4 -> 7 -> 14 -> 28 back up
    u = small(channel_mults=(1, 2, 4, 4), attention_levels=(2, 3))
    x, trace = torch.randn(2, 1, 28, 28), []
    assert u(x, torch.tensor([3, 900]), trace=trace).shape == x.shape
    shapes = dict(trace)
    assert shapes["middle ResBlock+Attention+ResBlock"] == (2, 64, 4, 4)
    sizes = [s[-1] for _, s in trace]
    assert sizes[sizes.index(4):].count(7) >= 1 and sizes[-1] == 28

def test_zero_initialised_output_and_blocks_start_as_identity():
    u = small()
    out = u(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    assert torch.count_nonzero(out) == 0       # conv_out starts at zero: the first prediction is 0
    blocks = [m for m in u.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 11            # 3 down, 2 middle, 6 up
    for block in blocks:                       # each residual branch ends in a zero conv ...
        assert torch.count_nonzero(block.conv2.weight) == 0 and torch.count_nonzero(block.conv2.bias) == 0
        x = torch.randn(2, block.conv1.in_channels, 7, 7)
        emb = torch.randn(2, block.emb.in_features)
        torch.testing.assert_close(block(x, emb), block.skip(x))   # ... so the block starts as its skip path
    for attn in (m for m in u.modules() if isinstance(m, Attention)):
        x = torch.randn(2, attn.norm.num_channels, 4, 4)
        torch.testing.assert_close(attn(x), x)  # attention's output projection starts at zero too


def perturbed(u):
    with torch.no_grad():
        for p in u.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return u


def test_time_and_class_change_the_output():
    u = perturbed(small(num_classes=10))
    x = torch.randn(2, 1, 28, 28)
    a = u(x, torch.tensor([5, 5]), y=torch.tensor([1, 1]))
    assert not torch.allclose(a, u(x, torch.tensor([500, 500]), y=torch.tensor([1, 1])))
    assert not torch.allclose(a, u(x, torch.tensor([5, 5]), y=torch.tensor([2, 2])))
    # no label = the extra "null" row
    torch.testing.assert_close(u(x, torch.tensor([5, 5])), u(x, torch.tensor([5, 5]), y=torch.tensor([10, 10])))
    with pytest.raises(ValueError, match="no class conditioning"):
        small()(x, torch.tensor([5, 5]), y=torch.tensor([1, 1]))


def test_cross_attention_uses_the_context():
    u = perturbed(small(context_dim=12))
    x = torch.randn(2, 1, 28, 28)
    t = torch.tensor([3, 3])
    c1, c2 = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    assert not torch.allclose(u(x, t, context=c1), u(x, t, context=c2))
    with pytest.raises(ValueError, match="context"):
        u(x, t)


def test_batch_elements_are_independent():
    """No information leaks across the batch (GroupNorm, attention over pixels, not samples)."""
    u = perturbed(small())
    x = torch.randn(4, 1, 28, 28)
    t = torch.tensor([1, 2, 3, 4])
    full = u(x, t)
    torch.testing.assert_close(full[1:2], u(x[1:2], t[1:2]), rtol=1e-4, atol=1e-5)


def test_attention_matches_the_formula():
    """softmax(Q K^T / sqrt(d)) V per head, computed by hand."""
    torch.manual_seed(0)
    att = Attention(8, heads=2)
    torch.nn.init.normal_(att.out.weight)
    x = torch.randn(1, 8, 3, 3)
    tokens = att.norm(x).flatten(2).transpose(1, 2)
    q, k, v = att.qkv(tokens).chunk(3, -1)
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0, dim=-1)
        heads.append(w @ v[..., sl])
    want = x.flatten(2).transpose(1, 2) + att.out(torch.cat(heads, -1))
    torch.testing.assert_close(att(x), want.transpose(1, 2).reshape(1, 8, 3, 3), rtol=1e-5, atol=1e-5)


def test_skip_ablation_has_no_skips_and_still_runs():
    with_skips, without = small(), small(skip_connections=False)
    assert sum(p.numel() for p in without.parameters()) < sum(p.numel() for p in with_skips.parameters())
    assert without(torch.randn(2, 1, 28, 28), torch.tensor([1, 2])).shape == (2, 1, 28, 28)


def test_odd_sizes_and_rgb():
    u = small(in_channels=3, channel_mults=(1, 2), attention_levels=(1,))
    assert u(torch.randn(1, 3, 30, 30), torch.tensor([1])).shape == (1, 3, 30, 30)


def test_bad_unet_arguments():
    with pytest.raises(ValueError, match="attention_levels"):
        UNet(channel_mults=(1, 2), attention_levels=(2,))
    with pytest.raises(ValueError, match="divisible by heads"):
        Attention(10, heads=4)
    with pytest.raises(TypeError, match="base_channels must be an int"):
        UNet(base_channels=3.5)
