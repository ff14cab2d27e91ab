"""gpt2.tokenizer: exact ids against tiktoken with OpenAI's files, training, file formats, bad input."""

from __future__ import annotations

import doctest
import json
import random
import shutil
from collections import Counter

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpt2.tokenizer as T
from gpt2.errors import GPT2Error
from gpt2.tokenizer import GPT2_PATTERN, Tokenizer

from conftest import GPT2_BPE, SHARED, read_text, shared_text_files

SHARED_FILES = shared_text_files()
EOT = "<|endoftext|>"

# ----------------------------------------------------------------------------
# text generators for property tests: many scripts and the pattern's corner cases

FRAGMENTS = [
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", " don't", "rock 'n' roll", "I'm", "you’re",
    "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c",
    "123", " 2019", "3.14159", "٣٤٥", "१२३", "½", "Ⅻ", "0x1F",
    "Hello", " world", "naïve", "ﬁ", "Straße", "Ελληνικά", "русский", "עברית", "العربية", "हिन्दी", "ไทย",
    "日本語", "中文", "한국어", "e\u0301", "a\u0308\u0323", "🤗", "👩‍👩‍👧", "🇫🇷", "🏳️‍🌈",
    "\x00", "\x07", "\x1b[0m", "\x7f", "\u200b", "\u200d", "\ufeff", "\U0001d400",
    "<|endoftext", "|>", "!!!", "...", " --", "@-@", "“quoted”", "$$", " #", "~~~",
]
SCRIPTS = st.sampled_from(
    [
        "abcdefghijklmnopqrstuvwxyzABC",
        "αβγδεζηθ ΑΒΓ",
        "абвгдежз ЖЗИ",
        "אבגדהוזח",
        "ابتثجحخد",
        "कखगघङचछज",
        "กขฃคฅฆง",
        "一二三四五六七八九十",
        "가나다라마바사",
        "😀😃😄😁🤖🎉",
        "\u0300\u0301\u0302\u0308\u0327",
        " \t\n\r\u00a0\u2003",
        "0123456789٠١٢٣",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    ]
)
# Free text is drawn from characters assigned in Python's Unicode tables (14.0 in 3.11). Whether a newer one
# is a letter depends on the engine's tables: to the regex module (Unicode 17) U+323B0 is a letter, to
# tiktoken it is unassigned, so "\U000323b0's" splits differently (docs/tokenizer.md, "Unicode").
ASSIGNED = st.characters(exclude_categories=("Cs", "Cn"))
text_strategy = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), SCRIPTS.flatmap(lambda a: st.text(alphabet=a, max_size=12)), st.text(ASSIGNED, max_size=8)),
    max_size=25,
).map("".join)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="session")
def trained() -> Tokenizer:
    """A 2,000-token vocabulary learned from two real corpora."""
    texts = [read_text(SHARED / "botchan" / "botchan.txt"), read_text(SHARED / "tinyshakespeare" / "input.txt")]
    return Tokenizer.train(texts, 2000, workers=2, progress=False)


# ----------------------------------------------------------------------------
# OpenAI's GPT-2 vocabulary: identical to tiktoken


def test_official_vocabulary_shape(gpt2_tokenizer):
    tok = gpt2_tokenizer
    assert tok.n_vocab == 50257 and len(tok.merges) == 50000
    assert tok.eot_token == 50256 and tok.special_tokens == {EOT: 50256}
    assert tok.vocab[256] == b" t" and tok.vocab[50255] == b" gazed"  # first and last merge of vocab.bpe
    assert tok.byte_ids[ord("!")] == 0  # OpenAI's ids do not follow byte order
    assert tok.engine is not None


@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda p: str(p.relative_to(SHARED)))
def test_ids_equal_tiktoken_on_shared_datasets(path, gpt2_tokenizer, tiktoken_gpt2):
    text = read_text(path)
    expected = tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_tokenizer.encode_ordinary(text) == expected
    assert gpt2_tokenizer.decode(expected) == text


def test_python_reference_equals_tiktoken_on_all_shared_text(gpt2_tokenizer, tiktoken_gpt2):
    """The readable implementation, not just the engine, gives OpenAI's ids on ~12 MB of real text."""
    for path in SHARED_FILES:
        text = read_text(path)
        assert gpt2_tokenizer.encode_ordinary_python(text) == tiktoken_gpt2.encode_ordinary(text), path


@PROPERTY
@given(text_strategy)
def test_ids_equal_tiktoken_on_generated_text(gpt2_tokenizer, tiktoken_gpt2, text):
    expected = tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_tokenizer.encode_ordinary(text) == expected
    assert gpt2_tokenizer.encode_ordinary_python(text) == expected
    assert gpt2_tokenizer.encode(text, disallowed_special=()) == expected


@PROPERTY
@given(st.text())
def test_any_string_round_trips(gpt2_tokenizer, text):
    # st.text() never produces lone surrogates: every string it makes is valid Unicode
    assert gpt2_tokenizer.decode(gpt2_tokenizer.encode_ordinary(text)) == text
    assert gpt2_tokenizer.decode(gpt2_tokenizer.encode_ordinary_python(text)) == text


def test_lone_surrogates_are_replaced_like_tiktoken(gpt2_tokenizer, tiktoken_gpt2):
    text = "a\ud800b\udfff"  # not valid Unicode: cannot be written as UTF-8
    expected = tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_tokenizer.encode_ordinary(text) == expected
    assert gpt2_tokenizer.encode_ordinary_python(text) == expected
    assert gpt2_tokenizer.decode(expected) == "a\ufffdb\ufffd"


def test_encode_batch_equals_encode(gpt2_tokenizer, tiktoken_gpt2):
    big = read_text(SHARED / "tinyshakespeare" / "input.txt") * 3  # > 1 MB: cut into parts and rejoined
    docs = [big, "", "x", *read_text(SHARED / "ptb" / "ptb.valid.txt").split("\n")[:500]]
    assert gpt2_tokenizer.encode_batch(docs, num_threads=2) == [tiktoken_gpt2.encode_ordinary(d) for d in docs]


# ----------------------------------------------------------------------------
# special tokens


def test_special_token_text_is_never_silently_special(gpt2_tokenizer, tiktoken_gpt2):
    text = f"end of one{EOT}start of two"
    for fast in (True, False):
        gpt2_tokenizer.fast = fast
        try:
            with pytest.raises(GPT2Error, match="contains the special token"):
                gpt2_tokenizer.encode(text)
            with pytest.raises(GPT2Error, match="contains the special token"):
                gpt2_tokenizer.encode_batch(["fine", text])
            ordinary = gpt2_tokenizer.encode_ordinary(text)
            assert 50256 not in ordinary and ordinary == tiktoken_gpt2.encode_ordinary(text)
            assert gpt2_tokenizer.encode(text, disallowed_special=()) == ordinary
            special = gpt2_tokenizer.encode(text, allowed_special={EOT})
            assert special.count(50256) == 1 and special == tiktoken_gpt2.encode(text, allowed_special="all")
            assert gpt2_tokenizer.encode(text, allowed_special="all") == special
            assert gpt2_tokenizer.encode_batch([text, text], allowed_special="all") == [special, special]
        finally:
            gpt2_tokenizer.fast = True


def test_unknown_allowed_special_is_an_error(gpt2_tokenizer):
    with pytest.raises(GPT2Error, match="not a special token"):
        gpt2_tokenizer.encode("hi", allowed_special={"<|im_start|>"})


# ----------------------------------------------------------------------------
# decoding


def test_decode_partial_utf8_does_not_crash(gpt2_tokenizer):
    ids = gpt2_tokenizer.encode("🤗")
    assert len(ids) > 1  # the emoji's 4 bytes span several tokens
    assert gpt2_tokenizer.decode(ids[:1]) == "\ufffd"
    assert gpt2_tokenizer.decode_bytes(ids[:1]) == "🤗".encode()[: len(gpt2_tokenizer.vocab[ids[0]])]
    assert gpt2_tokenizer.decode(ids) == "🤗"


def test_stream_decoder_emits_whole_characters(gpt2_tokenizer):
    text = "Grüße 🤗 日本語 👩‍👩‍👧!"
    ids = gpt2_tokenizer.encode(text)
    stream = gpt2_tokenizer.stream_decoder()
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces  # some tokens end mid-character and were held back


def test_decode_rejects_ids_outside_the_vocabulary(gpt2_tokenizer):
    for bad in (50257, -1):
        with pytest.raises(GPT2Error, match="outside this tokenizer's vocabulary"):
            gpt2_tokenizer.decode([15496, bad])


# ----------------------------------------------------------------------------
# training


def test_worked_example_in_the_docstring():
    assert doctest.testmod(T, verbose=False).failed == 0


def test_c_and_python_merge_loops_make_the_same_merges():
    text = read_text(SHARED / "botchan" / "botchan.txt")
    c = Tokenizer.train([text], 1500, workers=1, progress=False, core="c")
    py = Tokenizer.train([text], 1500, workers=1, progress=False, core="python")
    assert list(c.merges.items()) == list(py.merges.items())
    assert c.vocab == py.vocab and c.n_vocab == 1500


def test_training_merges_the_most_frequent_pair_first():
    text = read_text(SHARED / "ptb" / "ptb.valid.txt")
    tok = Tokenizer.train([text], 300, workers=1, progress=False)
    pieces = Counter(regex.findall(GPT2_PATTERN, text))
    pairs = Counter()
    for piece, n in pieces.items():
        b = piece.encode()
        for pair in zip(b, b[1:]):
            pairs[pair] += n
    top = max(pairs.values())
    best = min(p for p, n in pairs.items() if n == top)  # ties: smallest ids
    assert next(iter(tok.merges)) == best


def test_training_is_deterministic_across_document_order_and_workers():
    docs = read_text(SHARED / "wikitext2_tokens" / "wiki.valid.tokens").split(" = \n")
    a = Tokenizer.train(docs, 800, workers=1, progress=False)
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    b = Tokenizer.train(iter(shuffled), 800, workers=2, progress=False)
    assert list(a.merges.items()) == list(b.merges.items())


def _category(ch: str) -> str:
    return "L" if regex.match(r"\p{L}", ch) else "N" if regex.match(r"\p{N}", ch) else "S" if ch.isspace() else "O"


def test_merges_never_cross_character_categories(trained):
    contraction_parts = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'r", "'v", "'l"}
    checked = 0
    for new in trained.merges.values():
        try:
            token = trained.vocab[new].decode("utf-8")
        except UnicodeDecodeError:
            continue  # part of one multi-byte character
        body = token[1:] if token.startswith(" ") and len(token) > 1 else token
        cats = {_category(ch) for ch in body}
        assert len(cats) == 1 or token.isspace() or token in contraction_parts, token
        checked += 1
    assert checked > 1500


def test_trained_engine_matches_python_reference(trained):
    assert trained.engine is not None
    for path in [SHARED / "lambada" / "lambada_test.jsonl", SHARED / "wsc" / "WSCollection.xml", SHARED / "nq_open" / "NQ-open.dev.jsonl"]:
        text = read_text(path)
        fast = trained.encode_ordinary(text)
        assert fast == trained.encode_ordinary_python(text)
        assert trained.decode(fast) == text


@PROPERTY
@given(text_strategy)
def test_trained_vocabulary_round_trips_and_matches_reference(trained, text):
    ids = trained.encode_ordinary(text)
    assert ids == trained.encode_ordinary_python(text)
    assert trained.decode(ids) == text


def test_hugging_face_tokenizers_reads_our_files_and_agrees(trained, tmp_path):
    """An independent BPE implementation, loading the vocab.json / merges.txt we write, gives our ids."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    trained.save(tmp_path)
    hf = HFTokenizer(models.BPE.from_file(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    for path in [SHARED / "botchan" / "botchan.txt", SHARED / "story_cloze" / "cloze_test_val__spring2016.tsv"]:
        text = read_text(path)
        assert hf.encode(text).ids == trained.encode_ordinary(text)


def test_streaming_file_reader_counts_like_the_whole_text(tmp_path):
    text = read_text(SHARED / "wikitext2_tokens" / "wiki.test.tokens")
    path = tmp_path / "wiki.txt"
    path.write_text(text, encoding="utf-8")
    chunks = list(T.iter_file_text([path], chunk_chars=5000))
    assert len(chunks) > 100 and "".join(chunks) == text
    assert T.count_words(chunks, workers=2, progress=False) == Counter(regex.findall(GPT2_PATTERN, text))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=" \n\t\r\u00a0\u3000ab'sé1.,中🤗", max_size=40), st.integers(1, 8))
def test_safe_cuts_do_not_change_pre_tokenisation(text, size):
    parts = list(T._safe_chunks(text, size))
    assert "".join(parts) == text
    assert [p for part in parts for p in regex.findall(GPT2_PATTERN, part)] == regex.findall(GPT2_PATTERN, text)


def test_small_corpus_stops_early_with_a_smaller_vocabulary(caplog):
    tok = Tokenizer.train(["abab"], 1000, workers=1, progress=False)
    assert tok.n_vocab == 256 + 2 + 1  # 'ab', then 'abab'; then <|endoftext|>
    assert "ran out of pairs" in caplog.text


def test_merge_that_respells_a_token_falls_back_to_python():
    vocab = [bytes([b]) for b in range(256)] + [b"ab", b"abc", b"bc"]
    a, b, c = ord("a"), ord("b"), ord("c")
    merges = [(a, b, 256), (256, c, 257), (b, c, 258), (a, 258, 257)]  # 'abc' is reachable two ways
    tok = Tokenizer(vocab, merges)
    assert tok.engine is None  # tiktoken's rank-by-token rule could not honour the fourth merge
    assert tok.encode("abc bca") == [257, 32, 258, 97]
    assert tok.decode(tok.encode("xabcbc")) == "xabcbc"


@pytest.mark.parametrize("texts", [[], [""], ["", ""]])
def test_empty_corpus_is_an_error(texts):
    with pytest.raises(GPT2Error, match="empty"):
        Tokenizer.train(texts, 300, workers=1, progress=False)


def test_vocab_size_must_hold_bytes_and_specials():
    with pytest.raises(GPT2Error, match="too small"):
        Tokenizer.train(["hello"], 256, workers=1, progress=False)


# ----------------------------------------------------------------------------
# files


def test_save_load_round_trip(trained, gpt2_tokenizer, tmp_path):
    for tok, name in ((trained, "trained"), (gpt2_tokenizer, "gpt2")):
        tok.save(tmp_path / name)
        for loaded in (Tokenizer.load(tmp_path / name), Tokenizer.load(tmp_path / name / "bpe.json")):
            assert loaded.vocab == tok.vocab and loaded.merges == tok.merges
            assert loaded.special_tokens == tok.special_tokens and loaded.byte_ids == tok.byte_ids
        (tmp_path / name / "bpe.json").unlink()  # OpenAI's files alone
        openai = Tokenizer.load(tmp_path / name)
        assert openai.vocab == tok.vocab and openai.merges == tok.merges and openai.special_tokens == tok.special_tokens


def test_openai_files_are_written_back_byte_identical(gpt2_tokenizer, tmp_path):
    gpt2_tokenizer.save_openai(tmp_path)
    assert (tmp_path / "vocab.bpe").read_bytes() == (GPT2_BPE / "vocab.bpe").read_bytes()
    assert json.loads((tmp_path / "encoder.json").read_text()) == json.loads((GPT2_BPE / "encoder.json").read_text())


def test_hugging_face_file_names_load(gpt2_tokenizer, tmp_path):
    shutil.copy(GPT2_BPE / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(GPT2_BPE / "vocab.bpe", tmp_path / "merges.txt")
    assert Tokenizer.load(tmp_path).merges == gpt2_tokenizer.merges


@pytest.fixture
def openai_copy(tmp_path):
    encoder = json.loads((GPT2_BPE / "encoder.json").read_text(encoding="utf-8"))
    lines = (GPT2_BPE / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    return tmp_path, encoder, lines


def _write(tmp_path, encoder, lines):
    (tmp_path / "encoder.json").write_text(encoder if isinstance(encoder, str) else json.dumps(encoder), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("\n".join(lines), encoding="utf-8")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda e, l: ("{not json", l), "not valid JSON"),
        (lambda e, l: ({**e, "Ġextra": 60000}, l), "without gaps"),
        (lambda e, l: (e, l[:-10]), "no merge in vocab.bpe produces"),
        (lambda e, l: (e, l[:5] + ["Ġt zzqx"] + l[5:]), "'zzqx' is not in encoder.json"),
        (lambda e, l: (e, l[:5] + ["h e l"] + l[5:]), "expected two tokens"),
        (lambda e, l: (e, l[:5] + [l[3]] + l[5:]), "appears twice"),
        (lambda e, l: ({k: v for k, v in e.items() if k != "!"} | {"<|x|>": 0}, l), "lacks the token '!'"),
    ],
    ids=["encoder-not-json", "id-gap", "merges-truncated", "unknown-token", "bad-line", "duplicate-merge", "missing-byte"],
)
def test_malformed_openai_files_are_one_line_errors(openai_copy, damage, message):
    tmp_path, encoder, lines = openai_copy
    _write(tmp_path, *damage(encoder, lines))
    with pytest.raises(GPT2Error, match=regex.escape(message)) as info:
        Tokenizer.load(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: {**d, "format": "other"}, "is not a gpt2-bpe file"),
        (lambda d: {**d, "version": 99}, "format version 99"),
        (lambda d: {**d, "merges": [[300, 301, 256]] + d["merges"][1:]}, "not defined before it"),
        (lambda d: {**d, "special_tokens": {EOT: 5000}}, "out of range"),
        (lambda d: {k: v for k, v in d.items() if k != "merges"}, "malformed"),
    ],
)
def test_malformed_own_file_is_an_error(trained, tmp_path, edit, message):
    trained.save(tmp_path)
    data = json.loads((tmp_path / "bpe.json").read_text())
    (tmp_path / "bpe.json").write_text(json.dumps(edit(data)))
    with pytest.raises(GPT2Error, match=regex.escape(message)):
        Tokenizer.load(tmp_path)


def test_missing_tokenizer_locations(tmp_path):
    with pytest.raises(GPT2Error, match="does not exist"):
        Tokenizer.load(tmp_path / "nowhere")
    with pytest.raises(GPT2Error, match="holds no tokenizer"):
        Tokenizer.load(tmp_path)


def test_gpt2_from_cache_offline(tmp_path, monkeypatch, gpt2_tokenizer):
    monkeypatch.setenv("GPT2_CACHE", str(tmp_path))
    monkeypatch.setenv("GPT2_OFFLINE", "1")
    with pytest.raises(GPT2Error, match="GPT2_OFFLINE is set.*encoder.json"):
        Tokenizer.gpt2()
    shutil.copytree(GPT2_BPE, tmp_path / "gpt2_bpe")  # what a download leaves in the cache
    assert Tokenizer.gpt2().merges == gpt2_tokenizer.merges
