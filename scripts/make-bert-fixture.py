#!/usr/bin/env python3
"""Write the small BERT fixture the text family's tests load: a randomly initialised
`transformers.BertModel` at reduced size (hidden 32, 2 layers, 4 heads), its WordPiece tokenizer,
and its outputs on fixed texts, so that a test can check Vitrine's BERT forward pass against the
original to 1e-4 without any Python in CI.

    python3 -m venv .venv-bert && .venv-bert/bin/pip install torch transformers
    .venv-bert/bin/python scripts/make-bert-fixture.py crates/vitrine-text/fixtures/tiny-bert

Writes DIR/{config.json, model.safetensors, tokenizer.json, vocab.txt, expected.json}. The same
layout as a real checkpoint (`bert-base-chinese`, `bert-base-uncased`): Vitrine reads those the
same way.
"""
import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel

TEXTS = [
    "The battery life is great, delivery was fast.",
    "质量很好，物流很快！",
    "Screen broke after a week; terrible support.",
    "一般般吧",
]


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    words = "the battery life is great delivery was fast screen broke after a week terrible support good bad".split()
    chars = list("质量很好物流快一般吧差坏了")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words)) + chars + list(".,;!，！") + [f"##{c}" for c in "sdey"]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # What `BertTokenizerFast` builds for a BERT vocabulary: lower-casing BERT normaliser (CJK
    # characters split apart), WordPiece, [CLS] … [SEP] around each text.
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(out / "tokenizer.json"))

    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    torch.manual_seed(0)
    model = BertModel(config).eval()
    model.save_pretrained(out, safe_serialization=True)

    encoded = [tokenizer.encode(t).ids for t in TEXTS]
    longest = max(map(len, encoded))
    input_ids = torch.tensor([ids + [0] * (longest - len(ids)) for ids in encoded])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids in encoded])
    with torch.no_grad():
        result = model(input_ids=input_ids, attention_mask=attention_mask)
    expected = {
        "texts": TEXTS,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "last_hidden_state": result.last_hidden_state.tolist(),
        "pooler_output": result.pooler_output.tolist(),
    }
    (out / "expected.json").write_text(json.dumps(expected), encoding="utf-8")
    print(f"{out}: {sum(p.numel() for p in model.parameters())} parameters, outputs of {len(TEXTS)} texts")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "crates/vitrine-text/fixtures/tiny-bert"))
