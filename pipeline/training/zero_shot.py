"""A teacher that needs no labels: a CLIP-style model (CLIP, SigLIP: an image tower and a text
tower trained to agree) classifies by comparing an image's embedding with the embeddings of
prompts built from the class names ("a photo of a {}."). The text tower runs once, here, to
build the head; the teacher that distils is the image tower with that head.

Candidates are written `clip:<hub id or local directory>`; real weights come from the
Hugging Face hub at run time (`clip:openai/clip-vit-base-patch32`)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgekiln.errors import InputError

PREFIX = "clip:"
DEFAULT_PROMPTS = (  # a few of CLIP's ImageNet templates (Radford et al., 2021), averaged per class
    "a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
    "a cropped photo of a {}.", "a low resolution photo of a {}.", "a good photo of a {}.", "a photo of one {}.",
)
_TEXT_PARTS = ("text_model", "text_projection")  # dropped once the head is built


def is_zero_shot(arch: str) -> bool:
    return arch.startswith(PREFIX)


def reference(arch: str) -> str:
    """The hub id or local directory of a `clip:` candidate."""
    return arch[len(PREFIX):]


class ZeroShotClassifier(nn.Module):
    """Images -> logits: the normalized image embedding against each class's text embedding
    (the head's rows, scaled by the model's logit scale; SigLIP's logit bias as its bias)."""

    def __init__(self, hf_model: nn.Module, num_classes: int, embed_dim: int):
        super().__init__()
        for part in _TEXT_PARTS:  # the image tower is all a teacher needs
            if hasattr(hf_model, part):
                setattr(hf_model, part, None)
        self.hf = hf_model
        self.head = nn.Linear(embed_dim, num_classes)

    def image_embedding(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hf.get_image_features(pixel_values=x)
        out = getattr(out, "pooler_output", out)  # transformers 5 returns an output object
        return F.normalize(out, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.image_embedding(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.image_embedding(x)
        return features, self.head(features)


def check(key: str, arch: str):
    """The candidate's config, which must have a text tower, and its tokenizer; InputError
    naming `key` and what is missing otherwise (before any training)."""
    from transformers import AutoConfig, AutoTokenizer

    ref = reference(arch)
    try:
        config = AutoConfig.from_pretrained(ref)
    except Exception as e:
        raise InputError(f"{key}: cannot load CLIP checkpoint {ref!r}: {str(e).splitlines()[0]}") from None
    if getattr(config, "text_config", None) is None or getattr(config, "vision_config", None) is None:
        raise InputError(f"{key}: {ref!r} is a {config.model_type} checkpoint without a text tower and an image "
                         "tower: a zero-shot teacher needs both (a CLIP or SigLIP model)")
    why = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
        # Without tokenizer files, transformers may still build an empty one: every word unknown.
        words = [i for i in tokenizer("a photo of a dog.")["input_ids"] if i not in tokenizer.all_special_ids]
        if not words:
            why = "its tokenizer knows no word (no vocabulary saved)"
        elif len(tokenizer) > config.text_config.vocab_size:
            why = f"its tokenizer has {len(tokenizer)} tokens, the text tower {config.text_config.vocab_size}"
    except Exception as e:
        why = str(e).splitlines()[0]
    if why is not None:
        raise InputError(f"{key}: {ref!r} has no tokenizer that loads (save it beside the model with "
                         f"save_pretrained): {why}")
    return config


@torch.no_grad()
def create(arch: str, class_names: list[str], prompts: list[str] | tuple[str, ...] = DEFAULT_PROMPTS,
           ) -> ZeroShotClassifier:
    """The zero-shot classifier of `arch` for `class_names`: each class's prompts embedded by
    the text tower, normalized, averaged and normalized again (CLIP's prompt ensembling)."""
    from transformers import AutoModel, AutoTokenizer

    ref = reference(arch)
    try:
        hf = AutoModel.from_pretrained(ref).eval()
        tokenizer = AutoTokenizer.from_pretrained(ref)
    except Exception as e:
        raise InputError(f"cannot load CLIP checkpoint {ref!r}: {str(e).splitlines()[0]}") from e
    rows, cut = [], []
    limit = getattr(getattr(hf.config, "text_config", hf.config), "max_position_embeddings", None)
    for name in class_names:
        readable = name.replace("_", " ")
        texts = [p.format(readable) for p in prompts]
        longest = max(len(ids) for ids in tokenizer(texts)["input_ids"])
        if limit is not None and longest > limit:
            cut.append(f"{name!r} ({longest} tokens)")
        # A text tower reads at most `limit` positions: longer prompts are cut there (the
        # tokenizer keeps the end-of-text token the tower pools at).
        tokens = tokenizer(texts, padding=True, truncation=limit is not None, max_length=limit, return_tensors="pt")
        text = hf.get_text_features(**tokens)
        text = F.normalize(getattr(text, "pooler_output", text), dim=-1).mean(0)
        rows.append(F.normalize(text, dim=-1))
    if cut:
        from edgekiln.progress import console

        console.print(f"  {arch}: its text tower reads {limit} token positions; the prompts of "
                      f"{', '.join(cut[:3])}{' and more' if len(cut) > 3 else ''} are longer and were cut to {limit}: "
                      "give shorter [teacher] prompts to keep them whole", markup=False)
    weight = torch.stack(rows) * hf.logit_scale.exp()
    bias = getattr(hf, "logit_bias", None)
    model = ZeroShotClassifier(hf, len(class_names), weight.shape[1])
    model.head.weight.copy_(weight)
    model.head.bias.copy_(torch.zeros(len(class_names)) if bias is None else bias.expand(len(class_names)))
    return model


def save_config(model: ZeroShotClassifier, directory: Path) -> None:
    model.hf.config.save_pretrained(str(directory))


def from_saved_config(directory: Path, num_classes: int) -> ZeroShotClassifier:
    """An untrained ZeroShotClassifier of the saved architecture, for saved weights to fill."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(directory))
    hf = AutoModel.from_config(config)
    return ZeroShotClassifier(hf, num_classes, config.projection_dim if hasattr(config, "projection_dim")
                              else config.vision_config.hidden_size)


def freeze_image_tower(model: ZeroShotClassifier) -> None:
    """A linear probe trains the head only."""
    for p in model.hf.parameters():
        p.requires_grad_(False)
