"""De-tokenizers: turn a tokenized benchmark back into ordinary text before BPE.

GPT-2's byte-level BPE can score any string, so the paper (section 3.1) runs
its language-modelling benchmarks through "invertible de-tokenizers" that undo
the tokenization artifacts of each dataset (spaces before punctuation,
`@-@` hyphens, ``` `` ``` quotes, ...). The perplexity is still normalised by
the units of the *original* dataset (words, bytes, characters), so these
functions change what the model sees, never what it is scored against.

The rules are the ones listed in EVAL_SPEC.md (the public conventions for the
GPT-2 evaluations); each is a small, separately tested step. Every function
maps str -> str and never touches `<unk>` tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# --------------------------------------------------------------------------
# WikiText (Merity et al. 2016): tokenized text with `@-@` style joiners.

# " @-@ " -> "-", " @,@ " -> ",", " @.@ " -> "."; two joiners in a row share the space between them
_WIKI_JOINER = re.compile(r" @([-,.])@(?: (?!@[-,.]@)|(?= @[-,.]@))")
_SPACE_BEFORE_PUNCT = re.compile(r" +([:;.!?,])")
_HEADING = re.compile(r"= (?:= )*=")  # "= = =" (section markers spelled with spaces)
_LINE_EDGE_SPACES = re.compile(r" *\n *")


def _tighten_pairs(text: str) -> str:
    """`( a b )` -> `(a b)` for (), [], {} and `" a b "` -> `"a b"` (quotes paired left to right on a line)."""
    text = re.sub(r"([(\[{]) +", r"\1", text)
    text = re.sub(r" +([)\]}])", r"\1", text)
    # A pair of straight quotes on one line: drop the space after the opening
    # one and before the closing one. Quotes are paired in order of appearance,
    # as a reader would.
    return re.sub(r'"[ ]*([^"\n]*?)[ ]*"', r'"\1"', text)


def wikitext(text: str) -> str:
    """WikiText-2 / WikiText-103 tokenized text -> plain text.

    >>> wikitext(' \\n = = Career = = \\n He was a well @-@ known actor ( 1 @,@ 000 roles ) .')
    '\\n== Career ==\\nHe was a well-known actor (1,000 roles).'
    """
    text = _WIKI_JOINER.sub(r"\1", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _tighten_pairs(text)
    text = _HEADING.sub(lambda m: m.group(0).replace(" ", ""), text)
    text = _LINE_EDGE_SPACES.sub("\n", text)
    text = text.replace(" 's", "'s")
    text = text.replace("s '", "s'")
    return text


# --------------------------------------------------------------------------
# Penn Treebank (Mikolov's preprocessing: lower case, numbers -> N, <unk>).

_PTB_NUMBER = re.compile(r"(?<![^ \n])N(?![^ \n])")  # the token N, not a letter inside a word


def ptb(text: str) -> str:
    """Penn Treebank (Mikolov) text -> plain text. `N` (every number) becomes `1`; `<unk>` stays.

    >>> ptb(" the dow fell N points and it 's $ N a share \\n they do n't \\n")
    "the dow fell 1 points and it's $1 a share\\nthey don't\\n"
    """
    # N first: once " \n" is folded the last token of a line has no space after it
    text = _PTB_NUMBER.sub("1", text)
    text = text.replace(" '", "'")
    text = text.replace(" n't", "n't")
    text = _LINE_EDGE_SPACES.sub("\n", text)
    text = text.replace("$ 1", "$1")
    text = text.replace("# 1", "#1")
    return text.lstrip(" ")


# --------------------------------------------------------------------------
# Children's Book Test (Hill et al. 2016): PTB-style tokenization with `` '' quotes.

_CBT_SPACE_BEFORE = re.compile(r" +([:;!?,.])")


def cbt(text: str) -> str:
    """Children's Book Test sentence -> plain text.

    >>> cbt("`` Well , '' said the old woman , `` it 's late . ''")
    '"Well," said the old woman, "it\\'s late."'
    """
    text = text.replace(" '", "'")  # also turns " ''" into "''", so a closing quote hugs its sentence
    text = text.replace(" n't", "n't")
    text = text.replace("`` ", '"')
    text = text.replace("``", '"')
    text = text.replace("''", '"')
    return _CBT_SPACE_BEFORE.sub(r"\1", text)


# --------------------------------------------------------------------------
# LAMBADA (OpenAI's 5,153-passage jsonl): only the typographic double quotes.


def lambada(text: str) -> str:
    """LAMBADA passage -> plain text: curly double quotes become straight ones.

    >>> lambada("\\u201cSal!\\u201d she said")
    '"Sal!" she said'
    """
    return text.replace("\u201c", '"').replace("\u201d", '"')


# --------------------------------------------------------------------------
# One Billion Word benchmark (Chelba et al. 2013): news text tokenized with spaces
# around punctuation, quotes, brackets and currency symbols.

_OBW_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r" +([,.;:!?%)\]}])"), r"\1"),  # no space before closing punctuation
    (re.compile(r"([(\[{$£€#]) +"), r"\1"),  # none after opening brackets and currency
    (re.compile(r" +(n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE), r"\1"),  # contractions and possessives
    (re.compile(r"(\w) ' "), r"\1' "),  # plural possessive: "players ' union"
    (re.compile(r" - "), "-"),  # only spaced hyphens between words; " -- " (dash) is kept
)


def one_billion_word(text: str) -> str:
    """One Billion Word benchmark sentence(s) -> plain text.

    >>> one_billion_word('He said , " we paid $ 5 million ( about 4 % ) for the players \\' union . "')
    'He said, "we paid $5 million (about 4%) for the players\\' union."'
    """
    for pattern, repl in _OBW_RULES:
        text = pattern.sub(repl, text)
    return re.sub(r'"[ ]*([^"\n]*?)[ ]*"', r'"\1"', text)


def identity(text: str) -> str:
    """For datasets that are already plain text (enwik8, text8)."""
    return text


DETOKENIZERS: dict[str, Callable[[str], str]] = {
    "wikitext": wikitext,
    "ptb": ptb,
    "cbt": cbt,
    "lambada": lambada,
    "1bw": one_billion_word,
    "none": identity,
}
