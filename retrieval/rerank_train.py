"""Training the reranker (``retrieval.rerank``) on a collection's own questions.

No relevance-trained cross-encoder ships in a PyPI wheel, so covrag trains one: MiniLM's first
``layers`` layers with a linear head over [CLS] and the dense cosine, fine-tuned listwise —
for each question, softmax over its answer-bearing chunk and ``negatives`` hard negatives, the
other top dense candidates from other documents. Questions come from the generator writing one
per chunk (the chunk is the positive, as in generated calibration), or from QA pairs with gold
documents. torch and transformers are imported inside ``fine_tune``: serving never needs them.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retrieval.calibration_set import CalibrationItem, bears_answer
from retrieval.embed.base import Embedder
from retrieval.rerank import INFO_FILE, MAX_PAIR_TOKENS, RerankerInfo, passage_text
from retrieval.store.base import VectorStore


@dataclass(frozen=True, slots=True)
class TrainingGroup:
    """One question, its answer-bearing passage first, then hard negatives; with cosines."""

    question: str
    passages: list[str]
    cosines: list[float]


def training_groups(
    store: VectorStore,
    embedder: Embedder,
    collection: str,
    items: Sequence[CalibrationItem],
    *,
    candidates: int,
    negatives: int,
    seed: int,
) -> list[TrainingGroup]:
    """A group per item whose answer-bearing chunk is among its top ``candidates`` dense hits
    (only those are ever reranked); negatives are hits from documents without the answer."""
    rng = random.Random(seed)
    vectors = embedder.embed([it.question for it in items]).tolist()
    groups: list[TrainingGroup] = []
    for item, vector in zip(items, vectors, strict=True):
        hits = store.search(collection, vector, limit=candidates)
        positive = next((h for h in hits if bears_answer(item, h)), None)
        if positive is None:
            continue
        answer_docs = {h.doc_id for h in hits if bears_answer(item, h)}
        pool = [h for h in hits if h.doc_id not in answer_docs and h.doc_id != positive.doc_id]
        chosen = [positive, *rng.sample(pool, min(negatives, len(pool)))]
        if len(chosen) < 2:
            continue
        groups.append(
            TrainingGroup(
                question=item.question,
                passages=[passage_text(h.title, h.text) for h in chosen],
                cosines=[h.score for h in chosen],
            )
        )
    return groups


def fine_tune(
    groups: Sequence[TrainingGroup],
    out_dir: Path,
    base_dir: Path,
    *,
    layers: int,
    epochs: int,
    seed: int,
    lr: float = 1e-4,
    head_lr: float = 3e-3,
    batch_groups: int = 4,
    max_tokens: int = MAX_PAIR_TOKENS,
    trained_on: dict[str, object] | None = None,
) -> RerankerInfo:
    """Fine-tune and save encoder, tokenizer and ``reranker.json`` to ``out_dir`` (through a
    temp dir, so a crash never leaves half a model). Seeded: same data, same weights."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    # the layers left out and the pooler are "unexpected" weights: by design, not worth a table
    hf_logging.set_verbosity_error()
    if not groups:
        raise ValueError("no training groups: no question's answer chunk was a candidate")
    torch.manual_seed(seed)
    config = BertConfig.from_pretrained(base_dir, num_hidden_layers=layers)
    encoder = BertModel.from_pretrained(base_dir, config=config, add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    head = torch.nn.Linear(config.hidden_size + 1, 1)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    with torch.no_grad():  # start near the dense ranking: score ≈ 10 · cosine
        head.weight[0, -1] = 10.0
    optimizer = torch.optim.AdamW(
        [
            {"params": list(encoder.parameters()), "lr": lr},
            {"params": list(head.parameters()), "lr": head_lr},
        ],
        weight_decay=0.01,
    )
    steps = epochs * -(-len(groups) // batch_groups)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    order = list(range(len(groups)))
    rng = random.Random(seed)
    encoder.train()
    for _ in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch_groups):
            batch = [groups[i] for i in order[start : start + batch_groups]]
            pairs = [(g.question, p) for g in batch for p in g.passages]
            encoded = tokenizer(
                [q for q, _ in pairs],
                [p for _, p in pairs],
                truncation="longest_first",
                max_length=max_tokens,
                padding=True,
                return_tensors="pt",
            )
            cls = encoder(**encoded).last_hidden_state[:, 0, :]
            cos = torch.tensor([c for g in batch for c in g.cosines]).unsqueeze(1)
            scores = head(torch.cat([cls, cos], dim=1)).squeeze(1)
            loss = torch.zeros(())
            at = 0
            for g in batch:  # listwise: the positive (first) against its negatives
                logits = scores[at : at + len(g.passages)]
                loss = loss + torch.nn.functional.cross_entropy(
                    logits.unsqueeze(0), torch.zeros(1, dtype=torch.long)
                )
                at += len(g.passages)
            (loss / len(batch)).backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    weight = head.weight.detach()[0]
    info = RerankerInfo(
        weight=[float(x) for x in weight[:-1]],
        cosine=float(weight[-1]),
        bias=float(head.bias.detach()[0]),
        layers=layers,
        max_tokens=max_tokens,
        trained_on={"groups": len(groups), "epochs": epochs, "seed": seed, **(trained_on or {})},
    )
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    encoder.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / INFO_FILE).write_text(json.dumps(info.to_json(), indent=2) + "\n", encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out_dir)
    return info
