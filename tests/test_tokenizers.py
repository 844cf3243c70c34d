import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from archbench.errors import UserError
from tasks.text.tokenizers import SPECIALS, BPETokenizer, ByteTokenizer, WordTokenizer, build_tokenizer

TRAIN = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "Der schnelle braune Fuchs springt über den faulen Hund: %s, {name}, %(count)d.",
    "Unable to open file '%s': permission denied\n\nTry again later.",
] * 20
TRICKY = ["Héllo  wörld\n\n  tabs\there 日本語 %s {name} %(x)d", "", "a", " leading", "trailing \n", "🙂🙂 x"]


def _build(name, tmp_path, vocab_size=300):
    cfg = {"tokenizer": name, "vocab_size": vocab_size, "cache_dir": str(tmp_path)}
    return build_tokenizer(cfg, TRAIN, "fingerprint-a", SPECIALS)


@pytest.mark.parametrize("name", ["byte", "word", "bpe"])
def test_lossless_and_byte_exact(name, tmp_path):
    tok = _build(name, tmp_path)
    for text in TRICKY + TRAIN[:3]:
        ids = tok.encode(text)
        assert ids.dtype == np.int64
        assert tok.decode(ids) == text
        assert tok.num_bytes(ids) == len(text.encode("utf-8"))
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
        assert all(i < tok.vocab_size - len(SPECIALS) for i in ids)  # text never encodes to a special


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_word_and_bpe_roundtrip_any_text(text):
    for tok in (_WORD, _BPE):
        assert tok.decode(tok.encode(text)) == text
        assert tok.num_bytes(tok.encode(text)) == len(text.encode("utf-8"))


_WORD = WordTokenizer.train(TRAIN, 300, SPECIALS)
_BPE = BPETokenizer.train(TRAIN, 300, SPECIALS, "k", None)


def test_specials_follow_the_vocabulary_and_decode_to_nothing(tmp_path):
    for name in ("byte", "word", "bpe"):
        tok = _build(name, tmp_path)
        ids = sorted(tok.specials.values())
        assert ids == list(range(tok.vocab_size - len(SPECIALS), tok.vocab_size))
        assert tok.decode([tok.specials["<bos>"], *tok.encode("ok"), tok.specials["<eos>"]]) == "ok"
    assert ByteTokenizer().vocab_size == 256  # the LM task asks for no specials: its vocabulary is unchanged


def test_word_vocabulary_comes_from_train_only():
    tok = WordTokenizer.train(["alpha beta alpha beta alpha"], 300)
    assert set(tok.words) == {" alpha", " beta"}  # seen at least twice; "alpha" at the start only once
    ids = tok.encode(" alpha gamma")
    assert len(ids) == 1 + len(" gamma")  # unseen word spelled out in bytes
    assert tok.decode(ids) == " alpha gamma"


def test_bpe_is_cached_by_fingerprint_and_vocab_size(tmp_path, monkeypatch):
    first = _build("bpe", tmp_path, 300)
    files = list((tmp_path / "tokenizers").glob("*.json"))
    assert len(files) == 1

    import tokenizers

    def no_training(*a, **k):
        raise AssertionError("trained again although a cached vocabulary exists")

    monkeypatch.setattr(tokenizers.Tokenizer, "train_from_iterator", no_training)
    again = _build("bpe", tmp_path, 300)
    assert again.encode(TRAIN[1]).tolist() == first.encode(TRAIN[1]).tolist()
    monkeypatch.undo()
    _build("bpe", tmp_path, 320)  # another vocabulary size is another cache entry
    assert len(list((tmp_path / "tokenizers").glob("*.json"))) == 2
    other = build_tokenizer({"tokenizer": "bpe", "vocab_size": 300, "cache_dir": str(tmp_path)}, TRAIN[:30],
                            "fingerprint-b", SPECIALS)
    assert other.vocab_size <= 300
    assert len(list((tmp_path / "tokenizers").glob("*.json"))) == 3


def test_bad_tokenizer_settings_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="unknown task.tokenizer 'sentencepiece'"):
        build_tokenizer({"tokenizer": "sentencepiece"}, TRAIN, "f")
    with pytest.raises(UserError, match="vocab_size must be an integer >= 261"):
        build_tokenizer({"tokenizer": "bpe", "vocab_size": 100, "cache_dir": str(tmp_path)}, TRAIN, "f", SPECIALS)


def _save_bpe(path, texts, vocab_size=300):
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       special_tokens=["<|endoftext|>"]))
    tok.save(str(path))
    return tok


def test_pretrained_tokenizer_json_is_used_as_is(tmp_path):
    from archbench import build_task
    from tests.taskcfg import task_config

    texts = ["the quick brown fox jumps over the lazy dog " * 3 + str(i) for i in range(200)]
    hf = _save_bpe(tmp_path / "tokenizer.json", texts)
    (tmp_path / "docs.txt").write_text("\n\n".join(texts), encoding="utf-8")
    task = build_task(task_config("lm", tmp_path, source="files", path=str(tmp_path / "docs.txt"),
                                  tokenizer="pretrained", tokenizer_path=str(tmp_path)))
    tok = task.tokenizer
    assert tok.vocab_size == hf.get_vocab_size(with_added_tokens=True)
    text = "the lazy dog jumps, über alles"
    assert tok.encode(text).tolist() == hf.encode(text).ids
    assert tok.decode(tok.encode(text)) == text and tok.num_bytes(tok.encode(text)) == len(text.encode())
    assert task.data_info()["tokenizer"] == "pretrained"


def test_a_path_that_is_not_a_tokenizer_is_one_clear_error(tmp_path):
    from tasks.text.tokenizers import build_tokenizer

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="is not a tokenizer"):
        build_tokenizer({"tokenizer": "pretrained", "tokenizer_path": str(tmp_path)}, [], "fp")
    with pytest.raises(UserError, match="does not exist"):
        build_tokenizer({"tokenizer": "pretrained", "tokenizer_path": str(tmp_path / "nope")}, [], "fp")
    with pytest.raises(UserError, match="needs task.tokenizer_path"):
        build_tokenizer({"tokenizer": "pretrained", "tokenizer_path": None}, [], "fp")
