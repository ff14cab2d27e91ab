"""`gpt2 webtext clean`: language identification, length bounds and heuristic quality rules.

GPT-2 paper, section 2.1 ("heuristic based cleaning") and section 3.7 (WebText
was English: non-English pages were removed). The paper does not list its
rules; ours are the published ones of Gopher (Rae et al. 2021, appendix A.1.1)
and C4 (Raffel et al. 2020, section 2.2), applied to whole documents, in order,
the first that fails naming the drop:

    language          py3langid (langid.py's model, shipped inside the package: no download) gives another
                      language, or less than `min_language_score` probability for the chosen ones
    too short         fewer than `min_words` words (Gopher: 50)
    too long          more than `max_words` words (Gopher: 100,000)
    mean word length  mean word length outside [3, 10] characters (Gopher)
    symbols           more than 0.1 '#' or ellipses per word (Gopher)
    bullet lines      more than 90% of the lines start with a bullet (Gopher)
    ellipsis lines    more than 30% of the lines end with an ellipsis (Gopher)
    non-alphabetic    fewer than 80% of the words hold a letter (Gopher)
    no stop words     fewer than 2 of: the, be, to, of, and, that, have, with (Gopher; English only)
    repeated lines    more than 30% of the lines, or of their characters, are repeats of another line (Gopher)
    lorem ipsum       placeholder text (C4)

C4's rule that drops any page with a curly bracket is left out: it removes
every article that shows code. `rules = false` keeps only language and length.

Kept documents gain `language`, `language_score` and `words`; `stats.json`
counts the drops by rule and holds the language and length histograms that the
build report draws.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from functools import partial
from pathlib import Path

from gpt2.errors import GPT2Error
from gpt2.webtext.engine import open_engine
from gpt2.webtext.shards import StageDir, list_shards, read_jsonl, shard_suffix, write_json, write_jsonl

log = logging.getLogger(__name__)

DOC_SUFFIXES = (".jsonl", ".jsonl.zst")
STOP_WORDS = frozenset(("the", "be", "to", "of", "and", "that", "have", "with"))
BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "–", "-", "*", "·", "➢", "►", "✓", "✔")
_ALPHA = re.compile(r"[^\W\d_]")
LANGUAGE_SAMPLE = 3000  # characters given to the language identifier
_identifier = None


def identify_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) by py3langid's model, loaded once per process."""
    global _identifier
    if _identifier is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    # langid's scan is Python code (about 1 us a byte): 3,000 characters name a language as well as the whole text
    lang, score = _identifier.classify(text[:LANGUAGE_SAMPLE])
    return lang, float(score)


def word_bin(words: int) -> int:
    """The histogram bin of a word count: floor(log2(words)), 0 for 0 or 1 word."""
    return int(math.log2(words)) if words > 1 else 0


def quality_failure(text: str, words: list[str], language: str) -> str | None:
    """The first Gopher / C4 rule a document fails, or None (see the module docstring)."""
    n = len(words)
    mean = sum(map(len, words)) / n
    if not 3 <= mean <= 10:
        return "mean word length"
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / n > 0.1:
        return "symbols"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        if sum(line.startswith(BULLETS) for line in lines) / len(lines) > 0.9:
            return "bullet lines"
        if sum(line.endswith(("...", "…")) for line in lines) / len(lines) > 0.3:
            return "ellipsis lines"
    if sum(bool(_ALPHA.search(w)) for w in words) / n < 0.8:
        return "non-alphabetic"
    if language == "en" and len(STOP_WORDS.intersection(w.lower() for w in words)) < 2:
        return "no stop words"
    if len(lines) > 1:
        seen: set[str] = set()
        repeats = repeat_chars = 0
        for line in lines:
            if line in seen:
                repeats += 1
                repeat_chars += len(line)
            seen.add(line)
        if repeats / len(lines) > 0.3 or repeat_chars / sum(map(len, lines)) > 0.2:
            return "repeated lines"
    if "lorem ipsum" in text.lower():
        return "lorem ipsum"
    return None


def judge(doc: dict, settings) -> str | None:
    """Why a document is dropped, or None; adds `language`, `language_score` and `words` to it."""
    text = doc["text"]
    words = text.split()
    language, score = identify_language(text)
    doc["language"], doc["language_score"], doc["words"] = language, round(score, 4), len(words)
    if language not in settings.languages or score < settings.min_language_score:
        return "language"
    if len(words) < settings.min_words or len(words) == 0:
        return "too short"
    if len(words) > settings.max_words:
        return "too long"
    return quality_failure(text, words, language) if settings.rules else None


def clean_shard(path: Path, out_dir: Path, settings) -> dict:
    """One shard of documents -> the kept ones; returns the drops by rule and the histograms."""
    target = out_dir / (path.name.split(".")[0] + shard_suffix(settings.compress))
    stats_path = target.with_name(path.name.split(".")[0] + ".stats.json")
    if target.exists() and stats_path.exists():
        return json.loads(stats_path.read_text(encoding="utf-8"))
    drops: Counter = Counter()
    languages: Counter = Counter()
    lengths: Counter = Counter()
    kept = []
    n = 0
    for doc in read_jsonl(path):
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise GPT2Error(f"{path} holds a row without a 'text' string; give the output of `gpt2 webtext extract`")
        n += 1
        reason = judge(doc, settings)
        languages[doc["language"]] += 1
        if reason is not None:
            drops[reason] += 1
            continue
        lengths[word_bin(doc["words"])] += 1
        kept.append(doc)
    write_jsonl(target, kept)
    stats = {"documents": n, "kept": len(kept), "dropped": dict(drops), "languages": dict(languages),
             "log2_words": {str(k): v for k, v in sorted(lengths.items())}}
    write_json(stats_path, stats)
    return stats


def clean(cfg, engine=None) -> dict:
    """`gpt2 webtext clean`: returns the statistics it writes to OUT/stats.json.

    `engine`: an engine to run on (build shares one among its stages); by default the config's, opened here.
    """
    t0 = time.perf_counter()
    shards = list_shards(cfg.input, DOC_SUFFIXES, "document shard")
    shards = [s for s in shards if not s.name.startswith(("links-", "stats"))]
    settings = {"languages": cfg.languages, "min_language_score": cfg.min_language_score, "min_words": cfg.min_words,
                "max_words": cfg.max_words, "rules": cfg.rules, "compress": cfg.compress}
    out = StageDir(cfg.out, "clean", settings)
    with open_engine(cfg, engine) as engine:
        results = engine.map(partial(clean_shard, out_dir=out.path, settings=cfg), shards, desc="cleaning")
    total = {"documents": 0, "kept": 0}
    drops: Counter = Counter()
    languages: Counter = Counter()
    lengths: Counter = Counter()
    for r in results:
        total["documents"] += r["documents"]
        total["kept"] += r["kept"]
        drops.update(r["dropped"])
        languages.update(r["languages"])
        lengths.update(r["log2_words"])
    seconds = time.perf_counter() - t0
    stats = {"stage": "clean", **total, "dropped": dict(drops.most_common()), "languages": dict(languages.most_common()),
             "log2_words": dict(sorted(lengths.items(), key=lambda kv: int(kv[0]))), "seconds": round(seconds, 3)}
    out.write_stats(stats)
    log.info("clean: %s documents -> %s kept in %.1f s; dropped %s", f"{total['documents']:,}", f"{total['kept']:,}", seconds,
             ", ".join(f"{k} {v:,}" for k, v in drops.most_common()) or "none")
    return stats
