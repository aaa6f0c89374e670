"""clip.py: the contrastive loss against an independent computation and its floors, the tokenizer,
the text encoder's mask, zero-shot and retrieval helpers, and the text-conditioned U-Net."""
import math

import pytest
import torch

from minidiff import clip, data, unet


def naive_reference(img, txt, scale):
    """Radford et al. 2021, Fig. 3, written with explicit sums in float64."""
    img = img.double() / img.double().norm(dim=1, keepdim=True)
    txt = txt.double() / txt.double().norm(dim=1, keepdim=True)
    s = min(math.exp(scale), 100.0)
    b = len(img)
    total = 0.0
    for i in range(b):
        row = [s * float(img[i] @ txt[j]) for j in range(b)]
        col = [s * float(img[j] @ txt[i]) for j in range(b)]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return total / (2 * b)


def test_contrastive_loss_matches_an_independent_computation(g):
    img, txt = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    for scale in (0.0, clip.INIT_LOGIT_SCALE, 2.0):
        got = clip.contrastive_loss(img, txt, torch.tensor(scale))
        assert abs(got.item() - naive_reference(img, txt, scale)) < 1e-5
    # groups that are all distinct are the naive targets
    same = clip.contrastive_loss(img, txt, torch.tensor(1.0), groups=torch.arange(7))
    assert abs(same.item() - clip.contrastive_loss(img, txt, torch.tensor(1.0)).item()) < 1e-6


def test_the_temperature_starts_at_0_07_and_is_clamped_at_100(g):
    assert abs(math.exp(clip.INIT_LOGIT_SCALE) - 1 / 0.07) < 1e-9
    img, txt = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    at_100 = clip.contrastive_loss(img, txt, torch.tensor(math.log(100.0)))
    beyond = clip.contrastive_loss(img, txt, torch.tensor(math.log(5000.0)))
    assert torch.equal(at_100, beyond)
    assert clip.CLIP(10).logit_scale.item() == pytest.approx(clip.INIT_LOGIT_SCALE)


def test_uninformative_embeddings_cost_ln_B(g):
    b = 16
    img = torch.randn(1, 8, generator=g).expand(b, 8)            # every image alike, every caption alike
    txt = torch.randn(1, 8, generator=g).expand(b, 8)
    assert abs(clip.contrastive_loss(img, txt, torch.tensor(3.0)).item() - math.log(b)) < 1e-5
    # any embeddings at temperature -> infinity (exp(logit_scale) -> 0): chance, ln B
    img, txt = torch.randn(b, 8, generator=g), torch.randn(b, 8, generator=g)
    assert abs(clip.contrastive_loss(img, txt, torch.tensor(-30.0)).item() - math.log(b)) < 1e-5


def test_duplicate_captions_set_a_floor_that_groups_remove():
    groups = torch.tensor([0, 0, 1, 2, 2, 2])
    floor = (2 * math.log(2) + 0 + 3 * math.log(3)) / 6
    assert clip.contrastive_floor(groups) == pytest.approx(floor)
    perfect = torch.eye(3)[groups] * 1.0                # image i and caption i: one-hot of the caption
    hot = torch.tensor(math.log(100.0))
    naive = clip.contrastive_loss(perfect, perfect, hot).item()
    grouped = clip.contrastive_loss(perfect, perfect, hot, groups=groups).item()
    assert naive == pytest.approx(floor, abs=1e-6)      # the best possible embeddings sit on the floor
    assert grouped < 1e-6                               # ... and the duplicate-aware loss is ~0
    # the floor cannot be beaten: random embeddings for the same duplicate captions stay above it
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        img = torch.randn(6, 3, generator=gen)
        txt = torch.randn(3, 3, generator=gen)[groups]
        assert clip.contrastive_loss(img, txt, hot).item() >= floor - 1e-6


def test_contrastive_loss_refuses_bad_input():
    a = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same batch size"):
        clip.contrastive_loss(a, torch.randn(5, 3), 1.0)
    with pytest.raises(ValueError, match=r"\(B, E\)"):
        clip.contrastive_loss(a[0], a[0], 1.0)
    with pytest.raises(ValueError, match="groups must be integer ids of shape"):
        clip.contrastive_loss(a, a, 1.0, groups=torch.zeros(3, dtype=torch.long))


def test_tokenizer_round_trip_padding_and_unknown_words():
    tok = clip.Tokenizer.from_captions(data.shape_captions(), context_length=12)
    assert tok.vocab[:4] == list(clip.SPECIAL_TOKENS) and "circle" in tok.vocab and "and" not in tok.vocab
    ids = tok.encode(["a small red circle at the top left", "A Red Square!"])
    assert ids.shape == (2, 12) and ids.dtype == torch.long
    assert ids[0, 0] == tok.bos and ids[0, 9] == tok.eos and (ids[0, 10:] == tok.pad).all()
    assert ids[1, :5].tolist() == [tok.bos, tok.ids["a"], tok.ids["red"], tok.ids["square"], tok.eos]
    assert tok.decode(ids) == ["a small red circle at the top left", "a red square"]
    assert tok.encode([""])[0, :3].tolist() == [tok.bos, tok.eos, tok.pad]
    assert tok.unknown(["a crimson circle and a red square", "crimson"]) == ["crimson", "and"]
    unk = tok.encode(["a crimson circle"])
    assert unk[0, 2] == tok.unk and tok.decode(unk) == ["a <unk> circle"]
    with pytest.raises(ValueError, match=r"unknown words \['crimson'\]"):
        tok.encode(["a crimson circle"], strict=True)


def test_tokenizer_refuses_bad_prompts():
    tok = clip.Tokenizer(["a", "red"], context_length=4)
    with pytest.raises(ValueError, match="empty list"):
        tok.encode([])
    with pytest.raises(ValueError, match="at most context_length - 2 = 2"):
        tok.encode(["a red a"])
    with pytest.raises(TypeError, match="one str"):
        tok.encode("a red")
    with pytest.raises(TypeError, match="texts must be strings"):
        tok.encode([3])


def test_text_encoder_shapes_and_its_causal_mask(g):
    torch.manual_seed(0)
    tok = clip.Tokenizer.from_captions(data.shape_captions(), context_length=12)
    a = tok.encode(["a small red circle at the top left"])
    b = tok.encode(["a small red circle at the top right"])     # differs in the last word only
    for causal in (True, False):
        enc = clip.TextEncoder(len(tok), 12, width=32, layers=2, heads=4, causal=causal).eval()
        feats, pooled = enc(torch.cat([a, b]))
        assert feats.shape == (2, 12, 32) and pooled.shape == (2, 32)
        assert torch.equal(pooled, feats[:, 9])                   # the <eos> position
        earlier_same = torch.allclose(feats[0, :8], feats[1, :8])
        assert earlier_same == causal                             # causal: earlier tokens cannot see "right"
        assert not torch.allclose(pooled[0], pooled[1])           # <eos> sees everything either way
    with pytest.raises(ValueError, match="context_length=12 columns"):
        enc(a[:, :10])
    with pytest.raises(TypeError, match="LongTensor"):
        enc(a.float())


def test_clip_embeddings_are_unit_vectors(g):
    model = clip.CLIP(20, context_length=8, embed_dim=16, text={"width": 16, "layers": 1, "heads": 2},
                      image={"width": 8})
    tokens = torch.randint(4, 20, (3, 8), generator=g)
    tokens[:, -1] = 2                                                   # every row ends in <eos>
    img, txt = model(torch.randn(3, 3, 16, 16, generator=g), tokens)
    assert img.shape == txt.shape == (3, 16)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(3))


class ColourCLIP(torch.nn.Module):
    """A hand-made CLIP: an image's embedding is its mean colour, a prompt's is the colour its
    first word names (token 4 -> red, 5 -> green, 6 -> blue)."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def embed_image(self, x):
        return torch.nn.functional.normalize(x.mean((2, 3)) + 1, dim=-1)

    def embed_text(self, tokens):
        return torch.eye(3)[tokens[:, 0] - 4]


def test_zero_shot_classify_and_retrieval():
    images = torch.stack([torch.eye(3)[c][:, None, None].expand(3, 4, 4) * 2 - 1 for c in (2, 0, 1, 0)])
    prompts = [torch.tensor([[4, 0]]), torch.tensor([[5, 0], [5, 1]]), torch.tensor([[6, 0]])]
    assert clip.zero_shot_classify(ColourCLIP(), images, prompts).tolist() == [2, 0, 1, 0]
    with pytest.raises(ValueError, match="one \\(P, L\\) token tensor per class"):
        clip.zero_shot_classify(ColourCLIP(), images, [])
    e = torch.randn(5, 4)
    assert clip.retrieval_recall(e, e) == {"image_to_text": 1.0, "text_to_image": 1.0}
    shuffled = clip.retrieval_recall(e, e[[1, 2, 3, 4, 0]])
    assert shuffled["image_to_text"] < 1.0
    # with groups, any caption of the same group counts
    assert clip.retrieval_recall(e, e[[1, 0, 2, 3, 4]], groups=torch.tensor([0, 0, 1, 2, 3]))["image_to_text"] == 1.0


def small_text_unet(encoder, train=False):
    net = unet.UNet(in_channels=3, base_channels=8, channel_mults=(1, 2), attention_levels=(1,),
                    context_dim=encoder.width if encoder else 15)
    return clip.TextConditionedUNet(net, encoder, train_text_encoder=train)


def test_text_conditioned_unet_cross_attention_and_frozen_encoder(g):
    torch.manual_seed(0)
    tok = clip.Tokenizer.from_captions(data.shape_captions(), context_length=12)
    enc = clip.TextEncoder(len(tok), 12, width=16, layers=1, heads=2)
    model = small_text_unet(enc)
    x, t = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([3, 700])
    tokens = tok.encode(["a small red circle at the top left", "a large blue square in the centre"])
    with unet.record_cross_attention(model) as maps:
        out = model(x, t, context=tokens)
    assert out.shape == x.shape
    assert {(h, w) for h, w, _ in maps} == {(4, 4)}                 # level 1 and the middle: 8x8 halved
    for h, w, weights in maps:
        assert weights.shape == (2, h * w, 12)                      # pixels x tokens
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, h * w))
    assert all(m.recorded is None for m in model.modules() if isinstance(m, unet.Attention))
    # the frozen encoder gets no gradient; a trained one does
    for train in (False, True):
        model = small_text_unet(clip.TextEncoder(len(tok), 12, width=16, layers=1, heads=2), train)
        for p in model.unet.parameters():                          # the zero-initialised outputs block the path
            torch.nn.init.normal_(p, std=0.1) if p.dim() > 1 else None
        model(x, t, context=tokens).square().mean().backward()
        grads = [p.grad for p in model.text_encoder.parameters()]
        assert all(gr is None for gr in grads) != train
    onehot = small_text_unet(None)
    assert onehot(x, t, context=data.shape_one_hot(data.shapes(2, 8, generator=g)[2])).shape == x.shape
    with pytest.raises(TypeError, match="float context"):
        onehot(x, t, context=tokens)
    with pytest.raises(ValueError, match="one row per image"):
        model(x, t, context=tokens[:1])
    with pytest.raises(ValueError, match="no cross-attention layer"):
        with unet.record_cross_attention(unet.UNet(base_channels=8)):
            pass
