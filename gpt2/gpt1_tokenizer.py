"""GPT-1's tokenizer: lower-cased words split at punctuation, then BPE over characters with a word-end mark.

GPT-1 (Radford et al. 2018, section 4.1) used "a bytepair encoding (BPE)
vocabulary with 40,000 merges" over text cleaned by ftfy and split by spaCy.
Its released files are `vocab.json` (40,478 entries: symbols, merged symbols,
`<unk>`) and `merges.txt`, where a word's last symbol carries `</w>`. This
reads those files and encodes as transformers' `OpenAIGPTTokenizer` does
without spaCy and ftfy, the form everyone reproduces: BERT's normalisation
(control characters dropped, other whitespace made a space, CJK characters
spaced, accents stripped, lower case), words split at whitespace and at each
punctuation character, then each word's merges by rank; a symbol outside the
vocabulary is `<unk>`. tests/test_gpt1_tokenizer.py checks the ids against
transformers. Unlike GPT-2's byte-level BPE it is not reversible: decoding
joins the words with spaces.

>>> tok = Gpt1Tokenizer({"l": 0, "o": 1, "w</w>": 2, "lo": 3, "low</w>": 4, "<unk>": 5}, [("l", "o"), ("lo", "w</w>")])
>>> tok.encode_ordinary("LOW low"), tok.decode([4, 4])
([4, 4], 'low low')
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from gpt2.errors import GPT2Error

END = "</w>"
UNK = "<unk>"


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:  # ASCII non-alphanumerics count as punctuation
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
    )


def normalize(text: str) -> str:
    """BERT's normalisation: control characters out, whitespace to ' ', CJK characters spaced, accents off, lower case."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD:
            continue
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf"):
            continue
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = unicodedata.normalize("NFD", "".join(out).lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def words(text: str) -> list[str]:
    """Split normalised text at whitespace, and each punctuation character into a word of its own."""
    out: list[str] = []
    for chunk in text.split():
        current = ""
        for ch in chunk:
            if _is_punctuation(ch):
                if current:
                    out.append(current)
                    current = ""
                out.append(ch)
            else:
                current += ch
        if current:
            out.append(current)
    return out


class Gpt1Tokenizer:
    """GPT-1's vocabulary and merges: `encode_ordinary`, `decode`, `add_special_tokens`, `save`, `load`."""

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]], special_tokens: dict[str, int] | None = None):
        self.encoder = dict(encoder)
        self.decoder = {i: s for s, i in self.encoder.items()}
        self.merge_list = [tuple(m) for m in merges]
        self.ranks = {pair: r for r, pair in enumerate(self.merge_list)}
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        for name, i in self.special_tokens.items():
            self.decoder[i] = name
        self.unk = self.encoder.get(UNK)
        self._cache: dict[str, list[int]] = {}

    @property
    def n_vocab(self) -> int:
        return max([*self.decoder, -1]) + 1

    @property
    def eot_token(self) -> int | None:
        return None  # GPT-1 has no document separator

    def _bpe(self, word: str) -> list[int]:
        if word in self._cache:
            return self._cache[word]
        symbols = [*word[:-1], word[-1] + END]
        while len(symbols) > 1:
            pairs = [(self.ranks.get((a, b), len(self.ranks)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
            rank, _ = min(pairs)
            if rank == len(self.ranks):
                break
            a, b = self.merge_list[rank]
            merged, i = [], 0
            while i < len(symbols):  # every occurrence of the pair, left to right
                if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        ids = []
        for s in symbols:
            if s in self.encoder:
                ids.append(self.encoder[s])
            elif self.unk is not None:
                ids.append(self.unk)
            else:
                raise GPT2Error(f"the symbol {s!r} is not in GPT-1's vocabulary, which has no {UNK} token")
        self._cache[word] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        return [i for word in words(normalize(text)) for i in self._bpe(word)]

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """`encode_ordinary`, with the allowed special tokens ("all": every one) kept whole."""
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        if not allowed:
            return self.encode_ordinary(text)
        out: list[int] = []
        rest = text
        while rest:
            found = min(((rest.find(s), s) for s in allowed if s in rest), default=None)
            if found is None:
                out += self.encode_ordinary(rest)
                break
            at, name = found
            out += self.encode_ordinary(rest[:at]) + [self.special_tokens[name]]
            rest = rest[at + len(name) :]
        return out

    def encode_batch(self, texts: Sequence[str], **_) -> list[list[int]]:
        return [self.encode_ordinary(t) for t in texts]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The symbols joined, each word end a space: what a stream of ids spells, piece by piece."""
        return "".join(self.decoder.get(i, UNK) for i in ids).replace(END, " ").encode("utf-8")

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        return self.decode_bytes(ids).decode("utf-8", errors).strip()

    def stream_decoder(self):
        """A decoder for ids arriving one at a time (generation, streaming)."""
        from gpt2.tokenizer import StreamDecoder

        return StreamDecoder(self)

    def add_special_tokens(self, names: Sequence[str]) -> list[int]:
        """Special tokens after the vocabulary (fine-tuning's start, delimiter and extract tokens); existing ones keep their ids."""
        ids = []
        for name in names:
            if name not in self.special_tokens:
                self.special_tokens[name] = self.n_vocab
                self.decoder[self.special_tokens[name]] = name
            ids.append(self.special_tokens[name])
        return ids

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(b"gpt1-bpe\0")
        h.update(json.dumps([sorted(self.encoder.items()), self.merge_list, sorted(self.special_tokens.items())]).encode())
        return h.hexdigest()[:16]

    # -- files --------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """vocab.json + merges.txt (GPT-1's released layout) and special_tokens.json for the added ones."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vocab.json").write_text(json.dumps(self.encoder, ensure_ascii=False), encoding="utf-8")
        merges = "".join(f"{a} {b}\n" for a, b in self.merge_list)
        (directory / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
        if self.special_tokens:
            (directory / "special_tokens.json").write_text(json.dumps(self.special_tokens), encoding="utf-8")
        return directory

    def save_openai(self, directory: str | Path) -> None:
        """GPT-1's files as transformers' OpenAIGPTTokenizer reads them: vocab.json (the added tokens included, as
        for GPT-2's encoder.json) and merges.txt."""
        directory = Path(directory)
        (directory / "vocab.json").write_text(json.dumps({**self.encoder, **self.special_tokens}, ensure_ascii=False), encoding="utf-8")
        (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merge_list), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> Gpt1Tokenizer:
        directory = Path(directory)
        try:
            encoder = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
            lines = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
            special = directory / "special_tokens.json"
            specials = json.loads(special.read_text(encoding="utf-8")) if special.is_file() else {}
        except (OSError, ValueError) as e:
            raise GPT2Error(f"{directory} does not hold GPT-1's tokenizer files ({e})") from None
        merges = []
        for n, line in enumerate(lines, 1):
            if not line or line.startswith("#version"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise GPT2Error(f"{directory / 'merges.txt'}:{n} is not a merge (two symbols)")
            merges.append((parts[0], parts[1]))
        if not isinstance(encoder, dict) or not isinstance(specials, dict):
            raise GPT2Error(f"{directory / 'vocab.json'} should map symbols to ids")
        return cls(encoder, merges, specials)


def is_gpt1_files(directory: Path) -> bool:
    """Whether `directory` holds GPT-1's vocab.json + merges.txt (merges with the `</w>` word end)."""
    merges = Path(directory) / "merges.txt"
    if not (merges.is_file() and (Path(directory) / "vocab.json").is_file()):
        return False
    with open(merges, encoding="utf-8", errors="replace") as f:
        head = [next(f, "") for _ in range(2000)]
    return any(END in line for line in head)
