import pytest

from tasks.scoring.metrics import classification_scores, rouge_scores, translation_scores


def test_translation_scores_are_sacrebleu_on_detokenized_text():
    import sacrebleu

    refs = ["Die Datei '%s' kann nicht geöffnet werden.", "Zugriff verweigert"]
    hyps = ["Die Datei '%s' kann nicht gelesen werden.", "Zugriff verweigert"]
    got = translation_scores(hyps, refs)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert 0 < got["bleu"] < 100
    assert translation_scores(refs, refs) == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}


def test_rouge_f1_by_hand():
    # "the cat" vs "the dog": one shared unigram of two on each side -> P = R = F = 0.5; no shared bigram
    got = rouge_scores(["the cat"], ["the dog"])
    assert got == {"rouge1_f1": pytest.approx(50.0), "rouge2_f1": pytest.approx(0.0), "rougeL_f1": pytest.approx(50.0)}
    assert rouge_scores(["return the value"], ["Return the value."])["rougeL_f1"] == pytest.approx(100.0)
    # averaged over documents, not pooled
    assert rouge_scores(["a b", "x"], ["a b", "y"])["rouge1_f1"] == pytest.approx(50.0)


def test_accuracy_and_macro_f1_by_hand():
    # class 0: P=1, R=1/2 -> F=2/3; class 1: P=2/3, R=1 -> F=4/5; macro = (2/3 + 4/5) / 2
    got = classification_scores([0, 1, 1, 1], [0, 0, 1, 1])
    assert got["accuracy"] == pytest.approx(75.0)
    assert got["macro_f1"] == pytest.approx(100 * (2 / 3 + 4 / 5) / 2)
    # a rare class counts as much as a frequent one in macro-F1
    skewed = classification_scores([0] * 10, [0] * 9 + [1])
    assert skewed["accuracy"] == pytest.approx(90.0)
    assert skewed["macro_f1"] == pytest.approx(100 * (2 * 0.9 / 1.9) / 2)
