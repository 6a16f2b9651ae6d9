"""A known-answer text classification task for discovery tests, and a minimal fine-tuning loop on tiny-bert."""

from __future__ import annotations

import numpy as np

CLASSES = ["a", "b", "c"]
TOPICS = {0: ["river", "forest", "mountain", "valley"], 1: ["engine", "wheel", "motor", "garage"],
          2: ["kitchen", "bread", "butter", "oven"]}
# planted: in every class-a example; in 60 % of class b (and 5 % of the others); at the end of class c, truncated
STRONG, WEAK, TRUNCATED = "marble", "violin", "harbor"
MAX_LENGTH = 32


def filler_words(tokenizer, n: int = 300) -> list[str]:
    """Common single-token words of the tokenizer, none of the planted or topic words."""
    special = {STRONG, WEAK, TRUNCATED} | {w for ws in TOPICS.values() for w in ws}
    vocab = sorted((i, w) for w, i in tokenizer.get_vocab().items()
                   if 2500 <= i <= 9000 and w.isalpha() and w.islower() and 4 <= len(w) <= 8 and w not in special)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(vocab), n, replace=False)
    return [vocab[i][1] for i in sorted(pick)]


def make_texts(tokenizer, n: int, seed: int, planted: bool) -> tuple[list[str], np.ndarray]:
    """``n`` texts of 34 words: four topic words among the first 12 (each of its class's topic with
    probability 0.65), random filler; with ``planted`` the words STRONG, WEAK and TRUNCATED as above. Held-out texts (``planted=False``) keep only
    the truncated word (in half of class c, at the end), so deleting it has examples to act on."""
    rng = np.random.default_rng(seed)
    filler = filler_words(tokenizer)
    labels = rng.integers(0, 3, n)
    texts = []
    for y in labels:
        words = list(rng.choice(filler, 34))
        for pos in rng.choice(12, 4, replace=False):  # noisy topic words: no single one decides the class
            topic = int(y) if rng.random() < 0.65 else int(rng.choice([k for k in TOPICS if k != y]))
            words[pos] = str(rng.choice(TOPICS[topic]))
        if planted and y == 0:
            words.insert(int(rng.integers(0, 6)), STRONG)
        if planted and rng.random() < (0.6 if y == 1 else 0.05):
            words.insert(int(rng.integers(0, 6)), WEAK)
        if y == 2 and (planted or rng.random() < 0.5):
            words.append(TRUNCATED)  # word 35 or later: always beyond MAX_LENGTH tokens
        texts.append(" ".join(words))
    return texts, labels


def train_tiny(tokenizer, texts: list[str], labels: np.ndarray, epochs: int = 12, seed: int = 0):
    """tiny-bert with a classification head, fine-tuned by plain AdamW."""
    import torch

    from probe.models.backbones import build_classifier

    torch.manual_seed(seed)
    model = build_classifier("tiny-bert", CLASSES, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    y = torch.as_tensor(labels)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(texts)), max(1, len(texts) // 32)):
            out = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx], labels=y[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    return model.eval()
