"""De-tokenizers: every rule on its own, then what they must preserve on the real WikiText-2 and PTB files."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED, read_text
from gpt2.evaluate import detokenize as D

WT2 = SHARED / "wikitext2_tokens" / "wiki.test.tokens"
PTB = SHARED / "ptb" / "ptb.test.txt"


def pieces(text: str) -> list[str]:
    """Words and single punctuation marks: what a re-tokenizer would recover."""
    return re.findall(r"\w+|[^\w\s]", text)


# ----------------------------------------------------------------------------- WikiText rules


@pytest.mark.parametrize(
    "src, want",
    [
        ("well @-@ known", "well-known"),
        ("1 @,@ 000", "1,000"),
        ("3 @.@ 14", "3.14"),
        ("a , b . c ; d : e ! f ? g", "a, b. c; d: e! f? g"),
        ("( a b ) [ c ] { d }", "(a b) [c] {d}"),
        ('as " Craig " in " Teddy \'s Story "', 'as "Craig" in "Teddy\'s Story"'),
        ("= = = = Deep = = = =", "==== Deep ===="),
        ("= = = Sub = = =", "=== Sub ==="),
        ("= = Section = =", "== Section =="),
        ("x \n = Title = \n y", "x\n= Title =\ny"),
        ("end \n start", "end\nstart"),
        ("Teddy 's Story", "Teddy's Story"),
        ("the players ' union", "the players' union"),
        ("<unk> , <unk> 's", "<unk>, <unk>'s"),
    ],
)
def test_wikitext_rules(src, want):
    assert D.wikitext(src) == want


def test_wikitext_joiners_before_punctuation_spacing():
    # "@.@" is a joiner, not a full stop: no space may survive on either side
    assert D.wikitext("pi is 3 @.@ 14 .") == "pi is 3.14."


def test_wikitext_quotes_pair_within_a_line_only():
    assert D.wikitext('a " b\n c " d') == 'a " b\nc " d'


def test_wikitext_heading_markers_keep_single_equals():
    assert D.wikitext("x = y + 1") == "x = y + 1"


# ----------------------------------------------------------------------------- PTB rules


@pytest.mark.parametrize(
    "src, want",
    [
        ("it 's", "it's"),
        ("they do n't", "they don't"),
        ("end \n start", "end\nstart"),
        (" fell N points ", "fell 1 points "),
        ("N N shares", "1 1 shares"),
        ("$ N a share", "$1 a share"),
        ("# N ranked", "#1 ranked"),
        ("plunged N \n", "plunged 1\n"),
        ("the <unk> rose N N", "the <unk> rose 1 1"),
    ],
)
def test_ptb_rules(src, want):
    assert D.ptb(src) == want


def test_ptb_number_token_is_a_whole_word():
    assert D.ptb(" NASA and N.V. and N ") == "NASA and N.V. and 1 "


# ----------------------------------------------------------------------------- CBT, LAMBADA, 1BW


@pytest.mark.parametrize(
    "src, want",
    [
        ("the king 's son", "the king's son"),
        ("I do n't know", "I don't know"),
        ("`` Hello", '"Hello'),
        ("`` Well , '' said he", '"Well," said he'),
        ("a : b ; c ! d ? e , f .", "a: b; c! d? e, f."),
    ],
)
def test_cbt_rules(src, want):
    assert D.cbt(src) == want


def test_lambada_curly_double_quotes_only():
    assert D.lambada("\u201cHi,\u201d she said. It\u2019s late") == '"Hi," she said. It\u2019s late'


@pytest.mark.parametrize(
    "src, want",
    [
        ("He said , `` no . ''", "He said, `` no. ''"),
        ("costs $ 5 million ( about 4 % )", "costs $5 million (about 4%)"),
        ("the players ' union", "the players' union"),
        ("it 's John 's and they 're here", "it's John's and they're here"),
        ("we did n't go", "we didn't go"),
        ('he said " we won " .', 'he said "we won".'),
        ("a well - known fact -- indeed", "a well-known fact -- indeed"),
    ],
)
def test_one_billion_word_rules(src, want):
    assert D.one_billion_word(src) == want


# ----------------------------------------------------------------------------- properties on the real files


@pytest.fixture(scope="module")
def wikitext():
    original = read_text(WT2)
    return original, D.wikitext(original)


@pytest.fixture(scope="module")
def ptb():
    original = read_text(PTB)
    return original, D.ptb(original)


def test_wikitext2_keeps_every_word_and_mark(wikitext):
    original, detok = wikitext
    joined = original.replace("@-@", "-").replace("@,@", ",").replace("@.@", ".")
    # only spaces go: the words and punctuation marks, in order, are those of the original
    assert pieces(detok) == pieces(joined)
    assert re.sub(r"\s", "", detok) == re.sub(r"\s", "", joined)
    assert detok.count("\n") == original.count("\n") == 4358
    assert detok.count("<unk>") == original.count("<unk>")
    assert len(original.split()) == 241_211  # the words the perplexity is normalised by (245,569 - 4,358 <eos>)


def test_wikitext2_leaves_no_tokenization_artifacts(wikitext):
    _, detok = wikitext
    assert not re.search(r" [,.;:!?]", detok)
    assert not re.search(r"@[-,.]@", detok)
    assert not re.search(r"[(\[{] | [)\]}]", detok)
    assert " 's" not in detok
    assert not re.search(r"^ | $", detok, re.MULTILINE)
    assert re.search(r"^== .+ ==$", detok, re.MULTILINE) and re.search(r"^=== .+ ===$", detok, re.MULTILINE)


def test_ptb_keeps_every_word(ptb):
    original, detok = ptb
    numbers = re.sub(r"(?<![^ \n])N(?![^ \n])", "1", original)
    assert re.sub(r"\s", "", detok) == re.sub(r"\s", "", numbers)
    assert pieces(detok) == pieces(numbers.replace(" n't", "n't"))
    assert detok.count("\n") == original.count("\n") == 3761
    assert detok.count("<unk>") == original.count("<unk>") > 0
    assert len(original.split()) == 78_669  # 82,430 tokens - 3,761 <eos>
    assert " N " not in detok and " 's" not in detok and "$ 1" not in detok


_WORDS = st.sampled_from(["the", "cat", "N", "<unk>", "'s", "n't", ",", ".", "(", ")", '"', "@-@", "@,@", "= =", "$", "#", "1", "sat", "players", "'"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_WORDS, max_size=12), max_size=5))
def test_detokenizers_never_merge_or_drop_words(lines):
    """On any tokenized text, the de-tokenizers change spaces (and their documented symbols), never words."""
    text = "".join(" " + " ".join(line) + " \n" for line in lines)
    for detok, mapped, back in [
        (D.wikitext, text.replace("@-@", "-").replace("@,@", ","), None),
        (D.ptb, re.sub(r"(?<![^ \n])N(?![^ \n])", "1", text), None),
        (D.cbt, text.replace("``", "''").replace('"', "''"), ('"', "''")),  # both `` and '' become a double quote
        (D.one_billion_word, text, None),
    ]:
        out = detok(text)
        if back:
            out = out.replace(*back)
        assert out.count("\n") == text.count("\n")
        assert re.sub(r"\s", "", out) == re.sub(r"\s", "", mapped)
