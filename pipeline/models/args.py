"""The typed model arguments: everything needed to rebuild a run's networks.

A checkpoint stores ``ModelArgs.to_dict()``; ``ModelArgs.from_dict`` reads it back with
the config's type checks (unknown keys refused, choice fields checked against their
``Literal``), and fields added later take their defaults, so older checkpoints keep
loading. Every check lives in ``__post_init__``: an instance that exists is valid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.config import ModelConfig

Upsample = Literal["transposed", "resize_conv"]
Padding = Literal["zeros", "circular"]
GConditioning = Literal["film", "concat", "film+concat"]
DConditioning = Literal["projection", "planes", "projection+planes"]


class ModelArgsError(ConfigError, ValueError):
    """Bad model arguments (image size, widths, kernel, upsampling kind).

    A ValueError for callers that build models directly, and a ConfigError (hence a
    PipelineError) so the CLI reports it as one line.
    """


@dataclass(frozen=True)
class ModelArgs:
    """image_size: pixels per side H (a multiple of 16: four stride-2 stages); z_dim: latent
    size; g_channels / d_channels: the generator's last and the discriminator's first hidden
    width (the other layers are 2x, 4x, 8x); kernel_size: k x k kernels, odd or (transposed
    upsampling only) even; upsample: "transposed" or "resize_conv"; padding: "zeros" or
    "circular" (periodic maps); d_minibatch_std: 0 (off) or the group size of D's
    minibatch standard-deviation channel; condition_on: the parameters a conditional model
    takes, in its input order (empty: unconditional); g_conditioning: how G sees them ("film":
    an MLP of them gives every BatchNorm its gain and bias; "concat": appended to z; or both);
    d_conditioning: how D sees them ("projection": Miyato & Koyama 2018; "planes": constant
    input channels; or both); g_large_scale_rings: R > 0 gives G a gain on the rings 1 .. R of |k|
    before tanh, of the parameters' choosing when conditional (0: off)."""

    image_size: int
    z_dim: int = 64
    g_channels: int = 64
    d_channels: int = 64
    kernel_size: int = 5
    upsample: Upsample = "transposed"
    padding: Padding = "zeros"
    d_minibatch_std: int = 0
    condition_on: list[str] = dataclasses.field(default_factory=list)
    g_conditioning: GConditioning = "film"
    d_conditioning: DConditioning = "projection"
    g_large_scale_rings: int = 0

    def __post_init__(self):
        from pipeline.config import check_field_types

        try:
            check_field_types(self, "model")
        except ConfigError as e:
            raise ModelArgsError(str(e)) from None
        if self.image_size <= 0 or self.image_size % 16:
            raise ModelArgsError(f"model.image_size: must be a positive multiple of 16 (four stride-2 "
                                 f"stages), got {self.image_size!r}")
        for name in ("z_dim", "g_channels", "d_channels"):
            if getattr(self, name) < 1:
                raise ModelArgsError(f"model.{name}: must be an integer >= 1, got {getattr(self, name)!r}")
        if self.d_minibatch_std < 0 or self.d_minibatch_std == 1:
            raise ModelArgsError(f"model.d_minibatch_std: 0 (off) or a group size >= 2, got {self.d_minibatch_std!r}")
        names = self.condition_on
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ModelArgsError(f"model.condition_on: expected distinct parameter names, got {names!r}")
        if not 0 <= self.g_large_scale_rings <= self.image_size // 2:
            raise ModelArgsError(f"model.g_large_scale_rings: must be in 0 .. {self.image_size // 2} "
                                 f"(half the map's side), got {self.g_large_scale_rings!r}")
        if self.kernel_size < 2:
            raise ModelArgsError(f"model.kernel_size: must be an integer >= 2, got {self.kernel_size!r}")
        if self.kernel_size % 2 == 0 and self.upsample == "resize_conv":
            raise ModelArgsError(f"model.kernel_size: resize_conv needs an odd kernel (a centred "
                                 f"same-size convolution), got {self.kernel_size}")

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_size: int) -> ModelArgs:
        """The arguments for maps of ``image_size`` pixels per side (the training data's);
        ``cfg.image_size`` is 0 (take it from the data) or must equal it."""
        if cfg.image_size and cfg.image_size != image_size:
            raise ModelArgsError(f"model.image_size: config says {cfg.image_size} but the "
                                 f"maps are {image_size} pixels per side")
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if f.name != "image_size"}
        return cls(image_size=int(image_size), **fields)

    @classmethod
    def from_dict(cls, d: dict, where: str = "model args") -> ModelArgs:
        """Read a stored ``to_dict()``: unknown keys and wrong types are refused, missing
        fields other than image_size take their defaults."""
        from pipeline.config import build_typed

        if not isinstance(d, dict):
            raise ModelArgsError(f"{where}: expected a mapping, got {type(d).__name__}")
        if "image_size" not in d:
            raise ModelArgsError(f"{where}: missing 'image_size'")
        try:
            return build_typed(cls, d, "model")
        except ModelArgsError:
            raise
        except ConfigError as e:
            raise ModelArgsError(f"{where}: {e}") from None

    @property
    def n_params(self) -> int:
        """P, the number of conditioning values each map comes with (0: unconditional)."""
        return len(self.condition_on)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
