"""The device-resident batch pipeline: a dataset split moved to the training device in one piece, cut
into shuffled batches and augmented there (random crop with zero padding, horizontal flip, rotation),
vectorised. There is no DataLoader and no per-sample Python work, so a small ResNet on CIFAR is not
input-bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .data import DatasetInfo
from .errors import ConfigError

__all__ = ["Batches"]


# --------------------------------------------------------------------------------------------------
# Device-resident batches
# --------------------------------------------------------------------------------------------------


class Batches:
    """One dataset split resident on `device`, cut into (augmented, normalised) batches per epoch.

    The uint8 images and the labels are moved to `device` once here. `epoch` draws all the randomness
    of an epoch up front from a generator (permutation, crop offsets, flips, rotation angles), moves it
    to the device in one go, and then builds every batch with tensor ops only (no host sync).
    """

    def __init__(
        self,
        x_uint8: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        device: torch.device | str,
        info: DatasetInfo,
        train: bool,
        crop_padding: int | None = None,
        flip: bool | None = None,
        rotation: float = 0.0,
        channels_last: bool = False,
        drop_last: bool = False,
    ) -> None:
        if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        if y.dim() != 1 or y.numel() != x_uint8.shape[0]:
            raise ValueError(f"labels must be ({x_uint8.shape[0]},), got {tuple(y.shape)}")
        if x_uint8.shape[1] != len(info.mean) or len(info.std) != len(info.mean):
            raise ValueError(
                f"{info.name} has {len(info.mean)} channels of statistics, images have {x_uint8.shape[1]}"
            )
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        padding = info.crop_padding if crop_padding is None else int(crop_padding)
        if padding < 0:
            raise ConfigError(f"crop padding must be >= 0, got {crop_padding!r}")
        if rotation < 0:
            raise ConfigError(f"rotation must be >= 0 degrees, got {rotation!r}")

        self.device = torch.device(device)
        self.info = info
        self.train = bool(train)
        self.batch_size = int(batch_size)
        self.crop_padding = padding
        self.flip = info.flip if flip is None else bool(flip)
        self.rotation = float(rotation)
        self.channels_last = bool(channels_last)
        self.drop_last = bool(drop_last)
        self.num_samples = int(x_uint8.shape[0])

        self.x = x_uint8.to(self.device).contiguous()
        self.y = y.to(self.device, dtype=torch.int64)
        std = torch.tensor(info.std, dtype=torch.float32)
        mean = torch.tensor(info.mean, dtype=torch.float32)
        # (x / 255 - mean) / std  ==  x * scale + shift
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, -1, 1, 1).to(self.device)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def _normalise(self, xb: torch.Tensor) -> torch.Tensor:
        out = torch.addcmul(self._shift, xb.float(), self._scale)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (float32 normalised images (B, C, H, W), int64 labels) for one epoch.

        train=True: shuffled with `generator`, then per-sample random crop with zero padding, random
        horizontal flip and random rotation in [-rotation, rotation] degrees (zero fill). All random
        numbers come from `generator` (torch's global RNG when None), drawn before the first batch.
        train=False: the samples in order, without augmentation.
        """
        n, bs = self.num_samples, self.batch_size
        stop = len(self) * bs if self.drop_last else n
        if not self.train:
            for i in range(0, stop, bs):
                yield self._normalise(self.x[i : i + bs]), self.y[i : i + bs]
            return

        # Draw all of the epoch's randomness up front (one value per position in the epoch), then move
        # it to the device once; batches only slice these tensors.
        gdev = generator.device if generator is not None else torch.device("cpu")
        p = self.crop_padding
        perm = torch.randperm(n, generator=generator, device=gdev)
        offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=generator, device=gdev) if p > 0 else None
        flips = (torch.rand(n, generator=generator, device=gdev) < 0.5) if self.flip else None
        angles = None
        if self.rotation > 0:
            u = torch.rand(n, generator=generator, device=gdev)
            angles = (u * 2 - 1) * (self.rotation * math.pi / 180.0)
        dev = self.device
        perm = perm.to(dev, non_blocking=True)
        offsets = None if offsets is None else offsets.to(dev, non_blocking=True)
        flips = None if flips is None else flips.to(dev, non_blocking=True)
        angles = None if angles is None else angles.to(dev, non_blocking=True)

        _, _, h, w = self.x.shape
        rows = torch.arange(h, device=dev)
        cols = torch.arange(w, device=dev)
        cols_flipped = cols.flip(0)
        for i in range(0, stop, bs):
            idx = perm[i : i + bs]
            xb = self.x[idx]
            if offsets is not None or flips is not None:
                xb = self._crop_flip(
                    xb,
                    rows,
                    cols,
                    cols_flipped,
                    None if offsets is None else offsets[i : i + bs],
                    None if flips is None else flips[i : i + bs],
                )
            if angles is not None:
                xb = _rotate(xb.float(), angles[i : i + bs])
            yield self._normalise(xb), self.y[idx]

    def _crop_flip(self, xb, rows, cols, cols_flipped, offsets, flips) -> torch.Tensor:
        """Per-sample crop of the zero-padded batch and horizontal flip, as one gather.

        Output pixel (r, c) of sample b is padded[b, :, oy_b + r, ox_b + c'] with c' = W-1-c when the
        sample is flipped (flip after crop == reading the crop window mirrored)."""
        b, ch, h, w = xb.shape
        p = self.crop_padding if offsets is not None else 0
        src = F.pad(xb, (p, p, p, p)) if p > 0 else xb
        wp = w + 2 * p
        r = rows.expand(b, h)
        c = cols.expand(b, w)
        if flips is not None:
            c = torch.where(flips[:, None], cols_flipped.expand(b, w), c)
        if offsets is not None:
            r = r + offsets[:, :1]
            c = c + offsets[:, 1:]
        lin = (r[:, :, None] * wp + c[:, None, :]).view(b, 1, h * w).expand(b, ch, h * w)
        return src.reshape(b, ch, -1).gather(2, lin).view(b, ch, h, w)


def _rotate(xb: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each float image of the batch by its angle (radians) about the centre; zero fill.

    Nearest-neighbour sampling, as the official Tf-KD pipeline's ``transforms.RandomRotation(15)`` on PIL
    images (torchvision's default interpolation is NEAREST): pixels keep their uint8 values, no blur."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(xb.dtype), list(xb.shape), align_corners=False)
    return F.grid_sample(xb, grid, mode="nearest", padding_mode="zeros", align_corners=False)
