"""Offline checkpoints for tests and benchmarks: LLMLingua-2's architecture (and a tiny causal LM) with
random weights and tokenizers trained on the fly with the ``tokenizers`` library.

Nothing here downloads anything. The token classifiers have exactly the architecture of
``microsoft/llmlingua-2-xlm-roberta-large-meetingbank`` (``XLMRobertaForTokenClassification``, 2 labels,
512-token window) or of ``microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank``
(``BertForTokenClassification``); ``size="large"`` gives the xlm-roberta-large body (24 layers, hidden 1024,
16 heads) for timing, ``size="small"`` a 2-layer one for fast identity tests. The vocabulary is the trained
tokenizer's (a few thousand pieces, not 250,002): the transformer body, which is what costs time, is the
same.

llmlingua picks its tokenization rules from the model *path* (it must contain ``xlm-roberta-large`` or
``bert-base-multilingual-cased``), so the folders are named accordingly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenskip.data.datasets import SAMPLE_FILE

SIZES = {
    "small": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}

_EXTRA_TEXT = [
    "Step 1: First, we compute the total cost. Then we subtract the discount.",
    "Therefore, the answer is 42. So she has 7 apples left over after lunch.",
    "Let x be the number of cookies; then 3x + 5 = 20, so x = 5.",
    "He walks 2.5 miles per hour for 4 hours, which is 2.5 * 4 = 10 miles.",
    "The price increased by 20%, from $50 to $60, and the tax is $3.50.",
    "Each week she saves half of her allowance, which is $8 / 2 = $4 per week.",
    "Überprüfe das Ergebnis: 12 Äpfel und 7 Birnen ergeben 19 Früchte.",
    "Il y a 3 chats et 4 chiens, donc 7 animaux au total.",
    "小明有3个苹果，又买了5个，一共有8个苹果。",
    "Сначала посчитаем сумму: 3 + 4 = 7.",
]


def sample_corpus() -> list[str]:
    """Texts the offline tokenizers are trained on: tokenskip's bundled sample problems plus a few lines."""
    texts = list(_EXTRA_TEXT)
    for line in SAMPLE_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            texts += [row["question"], row.get("cot") or ""]
    return [t for t in texts if t]


def _train_unigram(corpus: Iterable[str], vocab_size: int) -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    # XLM-R's order: <s>=0, <pad>=1, </s>=2, <unk>=3 (XLMRobertaTokenizer hard-codes unk_id=3)
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>",
        shrinking_factor=0.75,
        max_piece_length=12,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    return [(str(piece), float(score)) for piece, score in vocab]


def _train_wordpiece(corpus: Iterable[str], vocab_size: int) -> list[str]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


def build_token_classifier(
    out_dir: str | Path,
    size: str = "small",
    family: str = "xlm-roberta",
    corpus: Iterable[str] | None = None,
    vocab_size: int = 2000,
    seed: int = 0,
    classifier_std: float = 1.0,
) -> Path:
    """Save a randomly initialised LLMLingua-2-style token classifier with a freshly trained tokenizer.

    Args:
        out_dir: parent folder; the checkpoint goes into a sub-folder whose name llmlingua accepts
            (``tiny-xlm-roberta-large-<size>`` or ``tiny-bert-base-multilingual-cased-<size>``).
        size: ``small`` (2 layers, hidden 64) or ``large`` (xlm-roberta-large body: 24 layers, hidden 1024).
        family: ``xlm-roberta`` (SentencePiece-style Unigram, ``▁`` word starts) or ``bert`` (WordPiece, ``##``).
        corpus: texts to train the tokenizer on (default: :func:`sample_corpus`).
        vocab_size: target vocabulary size of the trained tokenizer.
        seed: torch seed of the random weights.
        classifier_std: std of the classification head's weights; a wide head spreads the keep probabilities
            over (0, 1) like a trained model instead of bunching them at 0.5.

    Returns:
        The checkpoint folder.
    """
    import torch

    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    texts = list(corpus) if corpus is not None else sample_corpus()
    if family == "xlm-roberta":
        from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizer

        folder = Path(out_dir) / f"tiny-xlm-roberta-large-{size}"
        tokenizer = XLMRobertaTokenizer(vocab=_train_unigram(texts, vocab_size))
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=514,
            type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            num_labels=2,
            **SIZES[size],
        )
        model_cls = XLMRobertaForTokenClassification
    elif family == "bert":
        from transformers import BertConfig, BertForTokenClassification, BertTokenizer

        folder = Path(out_dir) / f"tiny-bert-base-multilingual-cased-{size}"
        vocab = {piece: i for i, piece in enumerate(_train_wordpiece(texts, vocab_size))}
        tokenizer = BertTokenizer(vocab=vocab, do_lower_case=False, strip_accents=False)
        config = BertConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=2,
            **SIZES[size],
        )
        model_cls = BertForTokenClassification
    else:
        raise ValueError(f"family must be 'xlm-roberta' or 'bert', got {family!r}")

    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, classifier_std)
        model.classifier.bias.zero_()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder


def build_causal_lm(
    out_dir: str | Path, corpus: Iterable[str] | None = None, vocab_size: int = 1000, seed: int = 0
) -> Path:
    """Save a tiny randomly initialised Llama causal LM with a trained byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = list(corpus) if corpus is not None else sample_corpus()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    folder = Path(out_dir) / "tiny-causal-lm"
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder


_NAMES = ["Tom", "Maria", "Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis"]
_ITEMS = ["apples", "pencils", "clips", "cookies", "books", "marbles", "stickers", "cupcakes"]


def synthetic_cots(n: int, seed: int = 0) -> list[str]:
    """GSM8K-like CoTs (calculator annotations, ``$``, line breaks, ``Step k:`` lines) for offline tests."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        a, b = rng.randint(2, 60), rng.randint(2, 12)
        lines = [
            f"{name} has {a} {item} and buys {b} more, so {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item}.",
            f"Each {item[:-1]} costs ${b}, which makes {a + b} * {b} = $<<{a + b}*{b}={(a + b) * b}>>{(a + b) * b}.",
            f"Half of them is {a + b} / 2 = {(a + b) / 2:g}, so {name} gives away the rest.",
            f"Therefore, the answer is {(a + b) * b - a}.",
        ]
        rng.shuffle(lines)
        lines = lines[: rng.randint(2, 4)]
        if i % 3 == 1:
            lines = [f"Step {k + 1}: {line}" for k, line in enumerate(lines)]
        out.append(("\n\n" if i % 4 == 2 else "\n").join(lines))
    return out


def long_cot(tokens: int, count: Any, seed: int = 0) -> str:
    """A GSM8K-like CoT of about ``tokens`` target tokens (``count(texts) -> token counts``): synthetic
    CoTs of :func:`synthetic_cots` joined by line breaks, for long-CoT tests and benchmarks."""
    pieces: list[str] = []
    total = 0
    batch = 0
    while total < tokens:
        more = synthetic_cots(64, seed=seed * 1000 + batch)
        batch += 1
        for text, n in zip(more, count(more), strict=True):
            if total >= tokens:
                break
            pieces.append(text)
            total += n + 1
    return "\n".join(pieces)
