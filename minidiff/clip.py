"""Text conditioning from scratch: a tokenizer, a text encoder, an image encoder and CLIP's loss.

A prompt reaches a diffusion model as a sequence of vectors. The path, built here piece by piece:

    "a small red circle" --Tokenizer--> [<bos>, a, small, red, circle, <eos>, <pad>, ...]  (ids, N x L)
                         --TextEncoder--> token features (N, L, D)  -> the U-Net's cross-attention
                                          pooled feature (N, D)     -> CLIP's joint embedding space

CLIP (Radford et al. 2021) trains the text encoder against an image encoder on (image, caption)
pairs: in a batch of B pairs, each image must pick its own caption among the B and each caption
its own image. With L2-normalised embeddings I, T (B x E) and a learned temperature,

    logits = exp(t) * I T^T,     loss = (CE(logits, arange B) + CE(logits^T, arange B)) / 2

(Fig. 3's pseudocode; t starts at ln(1 / 0.07) and exp(t) is clamped at 100, §2.5). Two captions
that are the *same string* make that target impossible: their text embeddings are identical, so
no model can tell them apart, and the naive loss cannot go below ``contrastive_floor`` (the mean of
ln(copies of one's own caption in the batch)). ``contrastive_loss(..., groups=caption_ids)`` makes
every pair with the same caption a positive: the loss is -log of the probability put on *any*
positive, whose floor is 0.

The text encoder is a small Transformer (Vaswani et al. 2017) with pre-norm blocks (as GPT-2 and
CLIP) and, like CLIP's, a **causal** mask by default: token i sees tokens 0..i, and the pooled
feature is the one at <eos>, the only token that has seen the whole prompt. ``causal=False``
gives a bidirectional encoder (padding masked). ``TextConditionedUNet`` puts a text encoder (or
one-hot attribute tokens) in front of a ``unet.UNet`` with cross-attention.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_int, check_tensor
from .unet import UNet

__all__ = ["Tokenizer", "TextEncoder", "ImageEncoder", "CLIP", "contrastive_loss", "contrastive_floor",
           "clamped_logit_scale", "zero_shot_classify", "retrieval_recall", "TextConditionedUNet",
           "SPECIAL_TOKENS", "INIT_LOGIT_SCALE", "MAX_LOGIT_SCALE"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
INIT_LOGIT_SCALE = math.log(1 / 0.07)      # Radford et al. 2021, §2.5: the temperature starts at 0.07
MAX_LOGIT_SCALE = 100.0                    # ... and exp(logit_scale) is clipped at 100


def _texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got one str (wrap it: [text])")
    texts = list(texts)
    if not texts:
        raise ValueError("texts must hold at least one prompt, got an empty list")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must be strings, got {type(bad[0]).__name__} ({bad[0]!r})")
    return texts


class Tokenizer:
    """Words -> ids, one id per known word: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then
    the vocabulary sorted. A prompt becomes ``<bos> words <eos>`` padded to ``context_length``.
    Text is lower-cased and split into runs of letters (punctuation is dropped)."""

    def __init__(self, words, context_length: int = 16):
        self.context_length = check_int("context_length", context_length, low=3)
        words = sorted({w for w in words} - set(SPECIAL_TOKENS))
        bad = [w for w in words if not re.fullmatch(r"[a-z]+", w)]
        if bad:
            raise ValueError(f"words must be lower-case letters only, got {bad[:3]}")
        self.vocab = list(SPECIAL_TOKENS) + words
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad, self.bos, self.eos, self.unk = range(4)

    @classmethod
    def from_captions(cls, captions, context_length: int = 16) -> "Tokenizer":
        """The tokenizer whose vocabulary is every word in ``captions``."""
        return cls({w for c in _texts(captions) for w in cls.split(c)}, context_length)

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z]+", text.lower())

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"Tokenizer({len(self)} tokens, context_length={self.context_length})"

    def unknown(self, texts) -> list[str]:
        """The words of ``texts`` that are not in the vocabulary (each once, in order of appearance)."""
        seen = []
        for t in _texts(texts):
            seen += [w for w in self.split(t) if w not in self.ids and w not in seen]
        return seen

    def encode(self, texts, strict: bool = False) -> torch.Tensor:
        """``texts`` (a list of N prompts) -> LongTensor (N, context_length). An unknown word
        becomes ``<unk>`` (``strict=True``: a ValueError naming the unknown words); a prompt with
        more than ``context_length - 2`` words is a ValueError (no silent truncation)."""
        texts = _texts(texts)
        if strict and self.unknown(texts):
            raise ValueError(f"unknown words {self.unknown(texts)} (strict=True); the vocabulary has "
                             f"{len(self) - 4} words")
        out = torch.full((len(texts), self.context_length), self.pad, dtype=torch.long)
        for i, t in enumerate(texts):
            words = self.split(t)
            if len(words) > self.context_length - 2:
                raise ValueError(f"prompt {t!r} has {len(words)} words; at most context_length - 2 = "
                                 f"{self.context_length - 2} fit with <bos> and <eos>")
            ids = [self.bos] + [self.ids.get(w, self.unk) for w in words] + [self.eos]
            out[i, :len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: torch.Tensor) -> list[str]:
        """LongTensor (N, L) -> the prompts' words (``<unk>`` stays visible; specials dropped)."""
        check_tensor("ids", ids)
        return [" ".join(self.vocab[i] for i in row if i not in (self.pad, self.bos, self.eos))
                for row in ids.tolist()]


class _Block(nn.Module):
    """Pre-norm Transformer block: x + attention(LN(x)), then x + MLP(LN(x)) (GPT-2, CLIP)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (z.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(self.ln1(x)).chunk(3, dim=-1))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)   # softmax(Q K^T / sqrt(d)) V
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.ln2(x))


class TextEncoder(nn.Module):
    """Token + position embeddings, ``layers`` pre-norm blocks, a final LayerNorm.

    ``forward(tokens) -> (features (N, L, width), pooled (N, width))``: ``features`` feed
    cross-attention; ``pooled`` is the feature at the <eos> token (CLIP's choice).
    """

    def __init__(self, vocab_size: int, context_length: int = 16, width: int = 64, layers: int = 2,
                 heads: int = 4, causal: bool = True, eos_id: int = 2, pad_id: int = 0):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, low=len(SPECIAL_TOKENS))
        self.context_length = check_int("context_length", context_length, low=3)
        self.width = check_int("width", width, low=1)
        heads = check_int("heads", heads, low=1)
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.causal, self.eos_id, self.pad_id = bool(causal), eos_id, pad_id
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(0.01 * torch.randn(context_length, width))
        self.blocks = nn.ModuleList([_Block(width, heads) for _ in range(check_int("layers", layers, low=1))])
        self.ln = nn.LayerNorm(width)

    def mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """Which keys each query may see (True = attend), (N, 1, L, L): padding never, and with
        ``causal`` only the keys at or before the query."""
        n, length = tokens.shape
        keep = (tokens != self.pad_id)[:, None, None, :].expand(n, 1, length, length)
        if self.causal:
            keep = keep & torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        return keep | torch.eye(length, dtype=torch.bool, device=tokens.device)   # a pad sees itself: no NaN

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor("tokens", tokens)
        if tokens.dtype != torch.long or tokens.dim() != 2:
            raise TypeError(f"tokens must be a LongTensor (N, L) from Tokenizer.encode, got {tokens.dtype} "
                            f"of shape {tuple(tokens.shape)}")
        if tokens.shape[1] != self.context_length:
            raise ValueError(f"tokens must have context_length={self.context_length} columns, got {tokens.shape[1]}")
        x = self.token(tokens) + self.position
        mask = self.mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln(x)
        has_eos = tokens == self.eos_id
        message = "every row of tokens must hold <eos>, where the pooled feature is read: use Tokenizer.encode"
        if tokens.device.type == "cpu":
            if not has_eos.any(1).all():
                raise ValueError(message)
        else:                                                          # checked without waiting for the GPU
            torch._assert_async(has_eos.any(1).all(), message)
        eos = has_eos.int().argmax(dim=1)                              # the first <eos> of each row
        return x, x[torch.arange(len(x), device=x.device), eos]


class ImageEncoder(nn.Module):
    """A small CNN: three stride-2 stages, then the 4 x 4 map flattened (so *where* things are
    survives, unlike a global average) and projected to ``embed_dim``."""

    def __init__(self, in_channels: int = 3, width: int = 32, embed_dim: int = 64):
        super().__init__()
        w = check_int("width", width, low=1)
        layers, c = [], check_int("in_channels", in_channels, low=1)
        for mult in (1, 2, 4):
            layers += [nn.Conv2d(c, w * mult, 3, stride=2, padding=1), nn.GroupNorm(min(8, w * mult), w * mult),
                       nn.SiLU(), nn.Conv2d(w * mult, w * mult, 3, padding=1), nn.SiLU()]
            c = w * mult
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.proj = nn.Linear(c * 16, check_int("embed_dim", embed_dim, low=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(images))


class CLIP(nn.Module):
    """An image encoder and a text encoder projected into one ``embed_dim`` space, and the learned
    ``logit_scale`` (log of the inverse temperature)."""

    def __init__(self, vocab_size: int, context_length: int = 16, embed_dim: int = 64, text: dict | None = None,
                 image: dict | None = None, in_channels: int = 3):
        super().__init__()
        self.text = TextEncoder(vocab_size, context_length, **(text or {}))
        self.image = ImageEncoder(in_channels, embed_dim=embed_dim, **(image or {}))
        self.text_proj = nn.Linear(self.text.width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings (N, embed_dim)."""
        return F.normalize(self.text_proj(self.text(tokens)[1]), dim=-1)

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (N, embed_dim)."""
        return F.normalize(self.image(images), dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():   # CLIP clips the parameter itself at ln 100 (Radford et al. 2021, §2.5), so the
            self.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))     # loss's gradient still reaches it there
        return self.embed_image(images), self.embed_text(tokens)


def clamped_logit_scale(logit_scale) -> torch.Tensor:
    """exp(logit_scale) with logit_scale clipped at ln ``MAX_LOGIT_SCALE`` (ln 100): the inverse
    temperature in use. ``CLIP.forward`` clips its parameter there before every use, so at the cap the
    gradient still flows (clipping exp(...) instead would give it zero gradient above 100, for good)."""
    return torch.as_tensor(logit_scale).clamp(max=math.log(MAX_LOGIT_SCALE)).exp()


def _check_pair(image_emb, text_emb):
    check_tensor("image_emb", image_emb)
    check_tensor("text_emb", text_emb)
    if image_emb.dim() != 2 or text_emb.dim() != 2:
        raise ValueError(f"image_emb and text_emb must be (B, E), got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb and text_emb must have the same batch size and width: "
                         f"{tuple(image_emb.shape)} against {tuple(text_emb.shape)}")


def _groups(groups, b: int) -> torch.Tensor:
    check_tensor("groups", groups)
    if groups.shape != (b,) or groups.is_floating_point():
        raise ValueError(f"groups must be integer ids of shape ({b},), got {groups.dtype} {tuple(groups.shape)}")
    return groups


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale,
                     groups: torch.Tensor | None = None) -> torch.Tensor:
    """The symmetric contrastive loss of Radford et al. 2021 (Fig. 3).

    Both embeddings are L2-normalised; logits = exp(logit_scale) (clamped at 100) * I T^T.
    ``groups=None``: cross-entropy to the diagonal in both directions, averaged. ``groups`` (B,)
    (e.g. caption ids): every (i, j) with groups[i] == groups[j] is a positive, and each row's loss
    is -log sum_{j positive} softmax(logits_i)_j: the probability of picking *a* right partner.
    """
    _check_pair(image_emb, text_emb)
    b = image_emb.shape[0]
    logits = clamped_logit_scale(logit_scale) * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    if groups is None:
        target = torch.arange(b, device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    groups = _groups(groups, b).to(logits.device)
    positive = groups[:, None] == groups[None, :]                 # symmetric, so one mask serves both ways

    def side(z):
        return -(torch.logsumexp(z.masked_fill(~positive, float("-inf")), dim=1) - torch.logsumexp(z, dim=1)).mean()

    return (side(logits) + side(logits.T)) / 2


def contrastive_floor(groups: torch.Tensor) -> float:
    """The lowest value the *naive* loss (``groups=None``) can reach on a batch whose captions are
    ``groups``: items sharing a caption have identical text embeddings, so at best each row spreads
    its probability evenly over its n_i copies, costing ln(n_i). The floor is mean_i ln(n_i)."""
    groups = _groups(groups, len(groups))
    counts = (groups[:, None] == groups[None, :]).sum(1).double()
    return counts.log().mean().item()


@torch.no_grad()
def zero_shot_classify(model: CLIP, images: torch.Tensor, class_tokens) -> torch.Tensor:
    """CLIP's zero-shot classifier (Radford et al. 2021, §3.1.2): each class is the mean of its
    prompts' text embeddings, renormalised (prompt ensembling, §3.1.4); an image gets the class of
    highest cosine similarity. ``class_tokens``: one LongTensor (P_k, L) of prompts per class.
    Returns the predicted class of every image (N,)."""
    class_tokens = list(class_tokens)
    if not class_tokens:
        raise ValueError("class_tokens must hold one (P, L) token tensor per class, got none")
    dev = next(model.parameters()).device
    classes = torch.stack([F.normalize(model.embed_text(t.to(dev)).mean(0), dim=-1) for t in class_tokens])
    sims = torch.cat([model.embed_image(x.to(dev)) @ classes.T for x in images.split(500)])
    return sims.argmax(1).cpu()


def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, groups: torch.Tensor | None = None,
                     k: int = 1) -> dict:
    """Recall@k both ways: the fraction of images whose own caption (any caption of the same group)
    is among the k texts most similar to it, and of texts whose image is among its k nearest."""
    _check_pair(image_emb, text_emb)
    k = check_int("k", k, low=1, high=len(image_emb))
    groups = torch.arange(len(image_emb)) if groups is None else _groups(groups, len(image_emb))
    sims = F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    g = groups.to(sims.device)
    i2t = (g[sims.topk(k, dim=1).indices] == g[:, None]).any(1).float().mean().item()
    t2i = (g[sims.T.topk(k, dim=1).indices] == g[:, None]).any(1).float().mean().item()
    return {"image_to_text": i2t, "text_to_image": t2i}


class TextConditionedUNet(nn.Module):
    """``model(x_t, t, context=...)``: a ``UNet`` with cross-attention whose context is a prompt.

    ``context`` is either tokens (LongTensor (N, L)), run through ``text_encoder`` (frozen unless
    ``train_text_encoder``), or already a float sequence (N, L, context_dim) (e.g. one-hot
    attribute tokens), handed to the U-Net as it is (``text_encoder=None``).
    """

    def __init__(self, unet: UNet, text_encoder: TextEncoder | None = None, train_text_encoder: bool = False):
        super().__init__()
        if not isinstance(unet, UNet) or unet.config["context_dim"] is None:
            raise TypeError("unet must be a UNet built with context_dim (cross-attention)")
        if text_encoder is not None and text_encoder.width != unet.config["context_dim"]:
            raise ValueError(f"the text encoder's width ({text_encoder.width}) must equal the U-Net's "
                             f"context_dim ({unet.config['context_dim']})")
        self.unet, self.text_encoder = unet, text_encoder
        self.train_text_encoder = bool(train_text_encoder)
        if text_encoder is not None and not train_text_encoder:
            text_encoder.requires_grad_(False)

    def encode(self, context: torch.Tensor) -> torch.Tensor:
        """The sequence the U-Net attends to: the text encoder's token features, or ``context`` itself."""
        if self.text_encoder is None:
            if context.is_floating_point():
                return context
            raise TypeError("this model takes a float context (N, L, context_dim), not tokens")
        if context.is_floating_point():
            raise TypeError("this model takes tokens (LongTensor (N, L)) as its context")
        with torch.set_grad_enabled(self.train_text_encoder and torch.is_grad_enabled()):
            return self.text_encoder(context)[0]

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        check_tensor("context", context)
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"context must have one row per image: {x.shape[0]}, got {context.shape[0]}")
        return self.unet(x, t, context=self.encode(context).to(x.dtype))
