"""The CosmoGAN DCGAN (Mustafa et al. 2019, arXiv:1706.02390): generator, discriminator, init.

Shapes below are for a square map of ``image_size`` = H pixels per side, s = H / 16,
g = ``g_channels``, d = ``d_channels``, k = ``kernel_size``, B = batch. k is odd
(CosmoGAN: 5) or, with transposed upsampling, even: k = 4 is the DCGAN kernel of
Radford et al., whose stride-2 transposed convolution covers every output pixel
equally often (k divisible by the stride), so it has no checkerboard of uneven overlap.
The generator's last layer (tanh) lands in (-1, 1), the range of the pixel
transform (pipeline/data/transforms.py); maps enter and leave the models
transformed, never in kappa.

Biases: a convolution followed by BatchNorm has no bias (BatchNorm subtracts the
per-channel batch mean, so such a bias cancels exactly, in training and eval mode;
pytorch/examples dcgan does the same). Layers *not* followed by BatchNorm keep
theirs: the generator's Linear (its bias is per output element, i.e. per channel
*and pixel*, so BatchNorm2d's per-channel centring does not remove it), the
generator's last transposed convolution (feeds tanh), the discriminator's first
convolution (no BatchNorm, as in DCGAN) and its final Linear. CosmoGAN's
TensorFlow code keeps every bias; the function computed is the same.

Everything here is plain ``nn.Sequential`` of stock layers, so channels_last,
``torch.autocast`` (bf16 on CPU, bf16/fp16 on CUDA) and ``torch.compile`` apply
unchanged.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from pipeline.models.args import ModelArgs
from pipeline.models.fourier import rfft_rings


def _pad(k: int) -> int:
    """Padding that makes a stride-2 k x k (transposed) convolution halve (double) the side
    exactly: k // 2 for odd k (with output_padding 1 when transposed), k // 2 - 1 for even k."""
    return k // 2 if k % 2 else k // 2 - 1


class PeriodicConvTranspose2d(nn.ConvTranspose2d):
    """A stride-2 transposed convolution on a torus: (B, c_in, h, w) -> (B, c_out, 2h, 2w).

    The full (unpadded) output, of side 2(h - 1) + k, is folded back onto the 2h x 2w
    grid: output pixel j of the zero-padded layer is full pixel j + p, and full pixels past
    the grid wrap to the start. So the result is what the layer gives on a periodic map,
    the same weights and parameter names as nn.ConvTranspose2d, and no extra arithmetic.
    """

    def __init__(self, c_in: int, c_out: int, k: int, bias: bool):
        super().__init__(c_in, c_out, k, stride=2, padding=0, bias=bias)
        self.crop = _pad(k)  # where the zero-padded layer's output starts in the full one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = nn.functional.conv_transpose2d(x, self.weight, stride=2)  # (B, c_out, 2h - 2 + k, 2w - 2 + k)
        for dim, n in ((-2, 2 * x.shape[-2]), (-1, 2 * x.shape[-1])):
            head, tail = full.narrow(dim, 0, n), full.narrow(dim, n, full.shape[dim] - n)
            pad = [0, 0] * (-dim - 1) + [0, n - tail.shape[dim]]
            full = torch.roll(head + nn.functional.pad(tail, pad), -self.crop, dim)
        # the bias after the fold, once per output pixel
        return full if self.bias is None else full + self.bias[:, None, None]


def _upsample(kind: str, c_in: int, c_out: int, k: int, bias: bool, padding: str = "zeros") -> nn.Module:
    """One stride-2 upsampling stage: (B, c_in, h, w) -> (B, c_out, 2h, 2w)."""
    if kind == "transposed" and padding == "circular":
        return PeriodicConvTranspose2d(c_in, c_out, k, bias)
    if kind == "transposed":
        # out = (h - 1) * 2 - 2 p + k + output_padding = 2h, for odd k (p = k // 2,
        # output_padding 1) and even k (p = k // 2 - 1, output_padding 0)
        return nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=_pad(k), output_padding=k % 2,
                                  bias=bias)
    if kind == "resize_conv":
        # nearest x2, then a same-size convolution (Odena et al. 2016: no checkerboard)
        return nn.Sequential(OrderedDict([
            ("resize", nn.Upsample(scale_factor=2, mode="nearest")),  # (B, c_in, 2h, 2w)
            ("conv", nn.Conv2d(c_in, c_out, k, stride=1, padding=k // 2, bias=bias,
                               padding_mode=padding)),  # (B, c_out, 2h, 2w)
        ]))
    raise ValueError(f"upsample kind {kind!r}")  # ModelArgs admits only the kinds above


class Generator(nn.Module):
    """z (B, z_dim) ~ N(0, 1) -> map (B, 1, H, W) in (-1, 1).

    Linear to 8g x s x s, BatchNorm, ReLU; four stride-2 upsampling stages
    8g -> 4g -> 2g -> g -> 1 with k x k kernels, BatchNorm + ReLU between, tanh last.
    A conditional generator (P = len(args.condition_on) > 0) takes params (B, P) too,
    normalised over the training support: appended to z ("concat") and/or through FiLM
    after every BatchNorm ("film", conditional batch normalisation).
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        g, k, s, up, pad = args.g_channels, args.kernel_size, args.image_size // 16, args.upsample, args.padding
        n_params = args.n_params
        self.concat = bool(n_params) and "concat" in args.g_conditioning
        self.main = nn.Sequential(OrderedDict([
            ("fc", nn.Linear(args.z_dim + (n_params if self.concat else 0), 8 * g * s * s)),  # (B, 8g*s*s)
            ("unflatten", nn.Unflatten(1, (8 * g, s, s))),         # (B, 8g, s, s)   512x16x16 @256
            ("bn0", nn.BatchNorm2d(8 * g)),
            ("relu0", nn.ReLU(inplace=True)),
            ("up1", _upsample(up, 8 * g, 4 * g, k, False, pad)),   # (B, 4g, 2s, 2s) 256x32x32
            ("bn1", nn.BatchNorm2d(4 * g)),
            ("relu1", nn.ReLU(inplace=True)),
            ("up2", _upsample(up, 4 * g, 2 * g, k, False, pad)),   # (B, 2g, 4s, 4s) 128x64x64
            ("bn2", nn.BatchNorm2d(2 * g)),
            ("relu2", nn.ReLU(inplace=True)),
            ("up3", _upsample(up, 2 * g, g, k, False, pad)),       # (B, g, 8s, 8s)  64x128x128
            ("bn3", nn.BatchNorm2d(g)),
            ("relu3", nn.ReLU(inplace=True)),
            ("up4", _upsample(up, g, 1, k, True, pad)),            # (B, 1, H, W)    1x256x256
            ("tanh", nn.Tanh()),                                   # values in (-1, 1)
        ]))
        self.film = None
        if n_params and "film" in args.g_conditioning:
            widths = {"bn0": 8 * g, "bn1": 4 * g, "bn2": 2 * g, "bn3": g}
            self.film = ParamFiLM(n_params, widths)
        self.large_scale = None
        if args.g_large_scale_rings:
            self.large_scale = LargeScaleGain(n_params, args.g_large_scale_rings, args.image_size)

    def forward(self, z: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """z: (B, z_dim), params: (B, P) normalised conditioning values ((B, 0) or None for an
        unconditional model) -> (B, 1, H, W) in (-1, 1) (transformed pixels, not kappa)."""
        if self.film is None and not self.concat and self.large_scale is None:
            return self.main(z)
        h = torch.cat([z, params.to(z.dtype)], 1) if self.concat else z
        films = self.film(params) if self.film is not None else {}
        for name, layer in self.main.named_children():
            if name == "tanh" and self.large_scale is not None:
                h = self.large_scale(h, params)
            h = layer(h)
            if name in films:
                gain, bias = films[name]
                h = h * gain.to(h.dtype) + bias.to(h.dtype)
        return h


class LargeScaleGain(nn.Module):
    """A gain on the largest scales: the map before tanh (B, 1, N, N), in Fourier space, has
    every mode of ring r = round(|k|) in 1 .. R multiplied by exp(a_r), where a is, for a
    conditional G, an MLP of the parameters, P -> 32 (ReLU) -> R, and for an unconditional
    one a learned vector of R; either starts at zero (the identity).

    Why: FiLM gives each channel of G one gain per cosmology over all of space, so the
    balance of the fundamental ring against the next is set by fixed spatial weights; the
    conditional runs kept the fundamental 15-23% low where the physical spectrum is
    steepest (low Omega_m, low sigma_8) while every other ring was right, and no weight of
    the auxiliary terms on G's shared weights moved it (docs/training-notes.md, C7). R
    dedicated outputs give the amplitude of those rings a parameter of its own, which Adam
    steps at full rate however small its share of the gradient. On the unconditional
    quickstart it did not help: the gain rose to 1.24x in ring-1 power and the rest of G
    took it back (runs lg_s0-2), so there the terms' balance, not G's reach, holds the
    fundamental low."""

    HIDDEN = 32

    def __init__(self, n_params: int, rings: int, size: int):
        super().__init__()
        self.net = None
        if n_params:
            self.net = nn.Sequential(nn.Linear(n_params, self.HIDDEN), nn.ReLU(inplace=True),
                                     nn.Linear(self.HIDDEN, rings))
        else:
            self.constant = nn.Parameter(torch.zeros(rings))
        ring = rfft_rings(size)
        # each rfft2 mode's column in [0, a_1 .. a_R]: 0 (no gain) outside rings 1 .. R
        self.register_buffer("column", torch.where((ring >= 1) & (ring <= rings), ring, 0), persistent=False)
        self.reset()

    def reset(self) -> None:
        if self.net is None:
            nn.init.zeros_(self.constant)
        else:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def log_gains(self, params: torch.Tensor | None, batch: int) -> torch.Tensor:
        """[0, a_1 .. a_R] (batch, R + 1): each ring's log amplitude gain, 0 for the others;
        params (batch, P) for a conditional G, ignored (None or (batch, 0)) otherwise."""
        a = self.constant.expand(batch, -1) if self.net is None else self.net(params.float())
        return torch.cat([torch.zeros_like(a[:, :1]), a], 1)

    def forward(self, h: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        gain = torch.exp(self.log_gains(params, len(h)))[:, self.column]       # (B, N, N/2 + 1)
        spectrum = torch.fft.rfft2(h.float()) * gain[:, None]
        return torch.fft.irfft2(spectrum, s=h.shape[-2:]).to(h.dtype).contiguous(memory_format=_format_of(h))


class ParamFiLM(nn.Module):
    """Conditional batch normalisation's gains and biases: params (B, P) -> for every named
    BatchNorm of width C, (1 + gamma(p), beta(p)), each (B, C, 1, 1), from a shared MLP
    P -> 128 -> 128 (ReLU) and one Linear per BatchNorm. Those last layers start at zero
    (a unit gain, no bias), so a conditional G starts as the unconditional one does, the
    BatchNorm's own affine weights included (de Vries et al. 2017; Dumoulin et al. 2018)."""

    HIDDEN = 128

    def __init__(self, n_params: int, widths: dict[str, int]):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(n_params, self.HIDDEN), nn.ReLU(inplace=True),
                                   nn.Linear(self.HIDDEN, self.HIDDEN), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({name: nn.Linear(self.HIDDEN, 2 * c) for name, c in widths.items()})
        self.reset_heads()

    def reset_heads(self) -> None:
        for head in self.heads.values():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, params: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        e = self.embed(params.float())
        out = {}
        for name, head in self.heads.items():
            gamma, beta = head(e)[:, :, None, None].chunk(2, 1)  # (B, C, 1, 1) each
            out[name] = (1 + gamma, beta)
        return out


class Discriminator(nn.Module):
    """Map (B, 1, H, W) -> one real/fake logit per map, shape (B,).

    Four k x k stride-2 convolutions 1 -> d -> 2d -> 4d -> 8d, LeakyReLU(0.2) after
    each, BatchNorm on all but the first; flatten; Linear to one logit (no sigmoid:
    use BCEWithLogits). A conditional D (P > 0) sees params (B, P), normalised, as P
    constant input planes ("planes") and/or through a projection ("projection"): the logit
    gains <embed(p), sum over positions of the last features> (Miyato & Koyama 2018), so
    D judges how well a map fits its parameters, not only whether it looks real.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        d, k, s, pm = args.d_channels, args.kernel_size, args.image_size // 16, args.padding
        p = _pad(k)
        n_params = args.n_params
        self.planes = bool(n_params) and "planes" in args.d_conditioning
        c_in = 1 + (n_params if self.planes else 0)
        # conv out = floor((h + 2p - k) / 2) + 1 = h / 2 for even h (odd or even k)
        self.main = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(c_in, d, k, 2, p, bias=True, padding_mode=pm)),            # (B, d, H/2, W/2)   64x128x128 @256
            ("lrelu1", nn.LeakyReLU(0.2, inplace=True)),
            ("conv2", nn.Conv2d(d, 2 * d, k, 2, p, bias=False, padding_mode=pm)),       # (B, 2d, H/4, W/4)  128x64x64
            ("bn2", nn.BatchNorm2d(2 * d)),
            ("lrelu2", nn.LeakyReLU(0.2, inplace=True)),
            ("conv3", nn.Conv2d(2 * d, 4 * d, k, 2, p, bias=False, padding_mode=pm)),   # (B, 4d, H/8, W/8)  256x32x32
            ("bn3", nn.BatchNorm2d(4 * d)),
            ("lrelu3", nn.LeakyReLU(0.2, inplace=True)),
            ("conv4", nn.Conv2d(4 * d, 8 * d, k, 2, p, bias=False, padding_mode=pm)),   # (B, 8d, s, s)      512x16x16
            ("bn4", nn.BatchNorm2d(8 * d)),
            ("lrelu4", nn.LeakyReLU(0.2, inplace=True)),
        ]))
        extra = 1 if args.d_minibatch_std else 0
        self.minibatch_std = MinibatchStd(args.d_minibatch_std) if extra else None
        self.head = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten(1)),                                # (B, (8d+extra)*s*s)
            ("fc", nn.Linear((8 * d + extra) * s * s, 1)),             # (B, 1)
        ]))
        self.projection = None
        if n_params and "projection" in args.d_conditioning:
            self.projection = nn.Sequential(OrderedDict([           # (B, P) -> (B, 8d)
                ("fc1", nn.Linear(n_params, 128)),
                ("lrelu", nn.LeakyReLU(0.2, inplace=True)),
                ("fc2", nn.Linear(128, 8 * d)),
            ]))

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, 1, H, W) transformed maps, params: (B, P) normalised conditioning values
        ((B, 0) or None when unconditional) -> (B,) logits."""
        if self.planes:
            b, _, h, w = x.shape
            planes = params.to(x.dtype)[:, :, None, None].expand(b, params.shape[1], h, w)
            x = torch.cat([x, planes], 1).contiguous(memory_format=_format_of(x))
        features = self.main(x)
        h = self.minibatch_std(features) if self.minibatch_std is not None else features
        logit = self.head(h).squeeze(1)
        if self.projection is not None:
            embedding = self.projection(params.float())                 # (B, 8d)
            logit = logit + (embedding * features.float().sum((2, 3))).sum(1)
        return logit

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the head was split from main: main.fc.* is head.fc.*
        old = f"{prefix}main.fc."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[f"{prefix}head.fc." + key[len(old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


class MinibatchStd(nn.Module):
    """One more channel (Karras et al. 2018): the standard deviation of each feature over a
    group of ``group`` maps of the batch, averaged over features and positions, the same
    value for every map of the group. Groups are strided, as in Karras et al.'s code (map k
    is in group k mod B/G); a batch B that ``group`` does not divide uses gcd(B, group)."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = math.gcd(b, self.group)
        y = x.float().reshape(g, b // g, c, h, w)       # map i of the batch is in group i % (b // g)
        std = (y.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # (b // g,)
        feature = std.repeat(g).to(x.dtype).reshape(b, 1, 1, 1).expand(b, 1, h, w)
        return torch.cat([x, feature], 1)


def weights_init(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2015), for ``model.apply(weights_init)``.

    Conv2d / ConvTranspose2d / Linear: weight ~ N(0, 0.02), bias = 0.
    BatchNorm: weight (gamma) ~ N(1, 0.02), bias (beta) = 0. Other modules untouched.
    Draws from torch's global RNG: seed it first for reproducible weights.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_models(args: ModelArgs) -> tuple[Generator, Discriminator]:
    """(Generator, Discriminator) for ``args``, ``weights_init`` applied.

    Built and initialised generator first, then discriminator, on the CPU in fp32;
    the caller seeds torch beforehand and moves / converts them afterwards.
    """
    if not isinstance(args, ModelArgs):
        raise TypeError(f"build_models takes ModelArgs, got {type(args).__name__}")
    G = Generator(args)
    G.apply(weights_init)
    if G.film is not None:
        G.film.reset_heads()  # FiLM starts as the identity (weights_init drew its heads)
    if G.large_scale is not None:
        G.large_scale.reset()  # likewise the large-scale gain
    D = Discriminator(args)
    D.apply(weights_init)
    return G, D
