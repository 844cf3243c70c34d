"""Task metrics, computed with the field's libraries so the numbers match what papers report.

MT: sacrebleu corpus BLEU (13a tokenization) and chrF on detokenized text. Summarization: rouge-score
ROUGE-1/2/L F1 (Porter stemming), averaged over documents, x100. Classification: scikit-learn
accuracy and macro-F1 (every class weighs the same, however rare), x100. The LM formulas (bits per
byte, perplexities) live with the LM task, next to the NLL they are computed from.
"""
from __future__ import annotations

from typing import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    import sacrebleu

    return {
        "bleu": sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score,
        "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score,
    }


def rouge_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hypotheses, references, strict=True):
        scores = scorer.score(ref, hyp)  # (target, prediction)
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
    n = max(1, len(references))
    return {f"{t}_f1": 100.0 * totals[t] / n for t in ROUGE_TYPES}


def classification_scores(predicted: Sequence[int], gold: Sequence[int]) -> dict[str, float]:
    """Macro-F1 over the classes that occur in gold or predictions (scikit-learn's default)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": 100.0 * accuracy_score(gold, predicted),
        "macro_f1": 100.0 * f1_score(gold, predicted, average="macro", zero_division=0),
    }
