"""Dataset loaders on the real files (where ../shared/datasets has them) and on small files written in the
canonical format (where it does not); finding, verifying and downloading files (file:// URLs, no network)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile

import pytest

from conftest import SHARED, need
from gpt2.errors import GPT2Error
from gpt2.evaluate import datasets as D
from gpt2.evaluate.cloze import split_last_word, substitute
from gpt2.evaluate.detokenize import lambada as detok_lambada

# ----------------------------------------------------------------------------- real files


def test_lambada_real_file(gpt2_tokenizer):
    texts = D.load_lambada(SHARED / "lambada" / "lambada_test.jsonl")
    assert len(texts) == 5153
    pairs = [split_last_word(detok_lambada(t)) for t in texts]
    assert pairs[0][1] == " signs" and pairs[0][0].endswith("I don't care about")
    assert all(t.startswith(" ") and " " not in t[1:] and "\n" not in t for _, t in pairs)
    # splitting context and target at the space gives the tokens of the whole passage
    for context, target in pairs:
        assert gpt2_tokenizer.encode_ordinary(context) + gpt2_tokenizer.encode_ordinary(target) == gpt2_tokenizer.encode_ordinary(context + target)


def test_lambada_targets_after_a_line_break():
    """The last word follows the passage's last white space, even a line break (7 passages)."""
    assert split_last_word("it certainly was some kind of\n\nPower") == ("it certainly was some kind of", " Power")
    with pytest.raises(GPT2Error, match="no context"):
        split_last_word("lonely")


def test_wsc273_real_file_agrees_with_an_independent_copy():
    schemas = D.load_wsc(SHARED / "wsc" / "WSCollection.xml")
    assert len(schemas) == 273
    first, last = schemas[0], schemas[272]
    assert (first.before, first.pronoun, first.after) == ("The city councilmen refused the demonstrators a permit because", "they", "feared violence.")
    assert first.candidates == ["The city councilmen", "The demonstrators"] and first.answer == 0
    assert last.before + " " + last.pronoun + " " + last.after == "Carol believed that Rebecca regretted that she had stolen the watch."
    # vid-koci/bert-commonsense's WSC273 (another format, another source) names the same right answers
    blocks = [b.split("\n") for b in (SHARED / "wsc" / "wsc273_vidkoci_masked.txt").read_text().split("\n\n") if b.strip()]
    assert len(blocks) == 273
    for s, block in zip(schemas, blocks):
        assert " ".join(block[3].split()).lower() == s.candidates[s.answer].lower()


@pytest.mark.parametrize(
    "index, candidate, want",
    [
        (0, 0, ("The city councilmen refused the demonstrators a permit because the city councilmen", " feared violence.")),
        (216, 1, ("Jim signaled the barman and gestured toward the barman's", " empty glass")),  # possessive
        (56, 1, ("The drain is clogged with hair. The hair", " has to be cleaned.")),  # sentence start keeps its capital
        (40, 1, ("The older students were bullying the younger ones, so we punished the younger students", ".")),
    ],
)
def test_wsc_substitution(index, candidate, want):
    schema = D.load_wsc(SHARED / "wsc" / "WSCollection.xml")[index]
    assert substitute(schema, schema.candidates[candidate]) == want


def test_nq_story_cloze_cola_real_files():
    nq = D.load_nq_open(SHARED / "nq_open" / "NQ-open.dev.jsonl")
    assert len(nq) == 3610 and sum(len(a) for _, a in nq) == 6490
    assert nq[0] == ("when was the last time anyone was on the moon", ["14 December 1972 UTC", "December 1972"])
    cloze = D.load_story_cloze(SHARED / "story_cloze" / "cloze_test_val__spring2016.tsv")
    assert len(cloze) == 1871 and sum(a == 0 for _, _, a in cloze) == 962
    assert cloze[0][0][0] == "Rick grew up in a troubled household." and cloze[0][1] == ["He is happy now.", "He joined a gang."]
    cola = D.load_cola([SHARED / "glue" / "CoLA" / "in_domain_dev.tsv", SHARED / "glue" / "CoLA" / "out_of_domain_dev.tsv"])
    assert len(cola) == 1043 and sum(y for _, y in cola) == 365 + 354


def test_story_cloze_csv_as_distributed(tmp_path):
    header = "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
    (tmp_path / "s.csv").write_text(header + 'id1,A b.,"C, d.",E.,F.,Good end.,Bad end.,1\nid2,A.,B.,C.,D.,X.,Y.,2\n')
    assert D.load_story_cloze(tmp_path / "s.csv") == [(["A b.", "C, d.", "E.", "F."], ["Good end.", "Bad end."], 0), (["A.", "B.", "C.", "D."], ["X.", "Y."], 1)]


def test_cnndm_sample_test_stories():
    root = SHARED / "cnn_dailymail_sample"
    stories = D.load_cnndm(root / "cnn_stories", root / "abisee_url_lists" / "all_test.txt")
    assert len(stories) == 10  # the 10 test stories of the sample (the other 10 are training stories)
    icc = next(s for s in stories if s.name.startswith("f001ec5c"))
    assert icc.article.startswith("(CNN)The Palestinian Authority officially became the 123rd member of the International Criminal Court")
    assert icc.highlights[-1] == "Israel and the United States opposed the move, which could open the door to war crimes investigations against Israelis"
    assert "@highlight" not in icc.article and all(s.highlights for s in stories)


def test_cnndm_without_stories_says_where_to_get_them(tmp_path):
    (tmp_path / "stories").mkdir()
    with pytest.raises(GPT2Error, match="DMQA"):
        D.load_cnndm(tmp_path / "stories", SHARED / "cnn_dailymail_sample" / "abisee_url_lists" / "all_test.txt")


# ----------------------------------------------------------------------------- canonical formats written here

CBT_TEXT = """1 Once upon a time there was a king .
2 He had `` three '' sons .
""" + "".join(f"{i} Sentence number {i} .\n" for i in range(3, 21)) + """21 The XXXXX was old .\tking\t\tqueen|king|son|time|upon|once|there|was|a|sentence

1 Another story begins .
""" + "".join(f"{i} More text {i} .\n" for i in range(2, 21)) + """21 XXXXX said `` hello '' .\tMary\t\tJohn|Mary|Peter|Paul|Anne|Jane|Mark|Luke|Eve|Adam
"""


def test_cbt_format(tmp_path):
    (tmp_path / "cbtest_CN_valid_2000ex.txt").write_text(CBT_TEXT)
    ex = D.load_cbt(tmp_path / "cbtest_CN_valid_2000ex.txt")
    assert len(ex) == 2
    assert len(ex[0].context) == 20 and ex[0].context[1] == "He had `` three '' sons ."
    assert ex[0].query == "The XXXXX was old ." and ex[0].candidates[ex[0].answer] == "king" and ex[0].answer == 1
    assert ex[1].answer == 1 and len(ex[1].candidates) == 10


@pytest.mark.parametrize(
    "text, problem",
    [
        ("1 a .\n2 b .\n", "middle of a question"),
        ("1 a .\n3 b .\n", "expected sentence 2"),
        ("x a .\n", "sentence number"),
        ("".join(f"{i} s .\n" for i in range(1, 21)) + "21 no blank\tx\t\ta|b\n", "XXXXX"),
        ("".join(f"{i} s .\n" for i in range(1, 21)) + "21 XXXXX .\tz\t\ta|b\n", "not among the candidates"),
        ("", "no CBT questions"),
    ],
)
def test_cbt_format_errors(tmp_path, text, problem):
    (tmp_path / "c.txt").write_text(text)
    with pytest.raises(GPT2Error, match=problem):
        D.load_cbt(tmp_path / "c.txt")


def test_coqa_format(tmp_path):
    data = {
        "version": "1.0",
        "data": [
            {
                "source": "mctest", "id": "3dr23u6we5exclen4th8uq9rb42tel", "filename": "mc160.test.41",
                "story": "Once upon a time, in a barn near a farm house, there lived a little white kitten named Cotton.",
                "questions": [{"input_text": "what color was cotton?", "turn_id": 1}, {"input_text": "where did she live?", "turn_id": 2}],
                "answers": [
                    {"span_start": 59, "span_end": 93, "span_text": "a little white kitten named Cotton", "input_text": "white", "turn_id": 1},
                    {"span_start": 18, "span_end": 80, "span_text": "in a barn near", "input_text": "in a barn", "turn_id": 2},
                ],
                "additional_answers": {
                    "0": [{"input_text": "white", "turn_id": 1}, {"input_text": "in a barn", "turn_id": 2}],
                    "1": [{"input_text": "white.", "turn_id": 1}, {"input_text": "barn", "turn_id": 2}],
                    "2": [{"input_text": "White", "turn_id": 1}, {"input_text": "near a farm house", "turn_id": 2}],
                },
            }
        ],
    }
    (tmp_path / "coqa-dev-v1.0.json").write_text(json.dumps(data))
    (story,) = D.load_coqa(tmp_path / "coqa-dev-v1.0.json")
    assert story.questions == ["what color was cotton?", "where did she live?"]
    assert story.answers == [["white", "white", "white.", "White"], ["in a barn", "in a barn", "barn", "near a farm house"]]
    (tmp_path / "bad.json").write_text('{"data": [{"story": "x"}]}')
    with pytest.raises(GPT2Error, match="not a CoQA file"):
        D.load_coqa(tmp_path / "bad.json")


SGM = """<srcset setid="newstest2014" srclang="any">
<doc sysid="ref" docid="1012-bbc" genre="news" origlang="en">
<p>
<seg id="1">Spectacular Wingsuit Jump Over Bogota</seg>
<seg id="2">Sportsman Jhonathan Florez jumped  from a helicopter &amp; flew.</seg>
</p>
<p>
<seg id="3"> A third   one </seg>
</p>
</doc>
</srcset>
"""


def test_wmt_sgm_matches_sacrebleu(tmp_path):
    """Our reader gives what sacrebleu's own conversion of the same file gives."""
    from sacrebleu.dataset.fake_sgml import FakeSGMLDataset

    (tmp_path / "newstest2014-fren-src.en.sgm").write_text(SGM)
    ours = D.load_sgm(tmp_path / "newstest2014-fren-src.en.sgm")
    FakeSGMLDataset._convert_format(FakeSGMLDataset.__new__(FakeSGMLDataset), str(tmp_path / "newstest2014-fren-src.en.sgm"), str(tmp_path / "out.txt"))
    assert ours == (tmp_path / "out.txt").read_text().splitlines()
    assert ours == ["Spectacular Wingsuit Jump Over Bogota", "Sportsman Jhonathan Florez jumped from a helicopter &amp; flew.", "A third one"]


def test_sst2_and_race_formats(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nit 's a charming and often affecting journey . \t1\nunflinchingly bleak \t0\n")
    assert D.load_sst2(tmp_path / "dev.tsv") == [("it 's a charming and often affecting journey . ", 1), ("unflinchingly bleak ", 0)]
    (tmp_path / "bad.tsv").write_text("a\tb\n")
    with pytest.raises(GPT2Error, match="header"):
        D.load_sst2(tmp_path / "bad.tsv")
    race = tmp_path / "RACE" / "test"
    (race / "high").mkdir(parents=True)
    (race / "middle").mkdir()
    (race / "high" / "1.txt").write_text(json.dumps({"answers": ["B", "D"], "options": [["a", "b", "c", "d"], ["e", "f", "g", "h"]],
                                                     "questions": ["Why?", "The text is about _ ."], "article": "Long article.", "id": "high1.txt"}))
    (race / "middle" / "2.txt").write_text(json.dumps({"answers": ["A"], "options": [["w", "x", "y", "z"]], "questions": ["Who?"],
                                                       "article": "Short.", "id": "middle2.txt"}))
    qs = D.load_race(race)
    assert [(q.question, q.answer) for q in qs] == [("Why?", 1), ("The text is about _ .", 3), ("Who?", 0)]


# ----------------------------------------------------------------------------- locating and fetching


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GPT2_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_locate_in_data_dir_by_name_and_hint(cache, monkeypatch):
    need("wikitext2_tokens/wiki.test.tokens", "lambada/lambada_test.jsonl")  # SHARED is the data folder here
    r = D.locate(D.SOURCES["wikitext2-test"], SHARED)
    assert r.path == SHARED / "wikitext2_tokens" / "wiki.test.tokens" and r.origin == "data-dir"
    assert r.sha256 == "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"
    assert D.locate(D.SOURCES["lambada-test"], SHARED).sha256 == D.SOURCES["lambada-test"].sha256
    # the WikiText-2 file is not taken for WikiText-103 (same file name)
    monkeypatch.setenv("GPT2_OFFLINE", "1")
    with pytest.raises(GPT2Error, match="wikitext103-test is not available"):
        D.locate(D.SOURCES["wikitext103-test"], SHARED)


def test_offline_error_says_where_to_put_the_file(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2_OFFLINE", "1")
    with pytest.raises(GPT2Error) as e:
        D.locate(D.SOURCES["cbt-cn-valid"], tmp_path)
    msg = str(e.value)
    assert "GPT2_OFFLINE" in msg and D.SOURCES["cbt-cn-valid"].url in msg and "CBTest/data/cbtest_CN_valid_2000ex.txt" in msg
    with pytest.raises(GPT2Error, match="rocstories"):
        D.locate(D.SOURCES["story-cloze-val"], tmp_path)


def test_corrupt_or_wrong_copies_are_refused(cache, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    text = (SHARED / "lambada" / "lambada_test.jsonl").read_text()
    (data / "lambada_test.jsonl").write_text(text.replace("signs", "sign"))
    with pytest.raises(GPT2Error, match="sha256"):
        D.locate(D.SOURCES["lambada-test"], data)
    (data / "ptb.test.txt").write_text("too short \n")
    with pytest.raises(GPT2Error, match="82,430"):
        D.locate(D.SOURCES["ptb-test"], data)


def _serve(monkeypatch, source: D.Source) -> None:
    monkeypatch.setitem(D.SOURCES, source.key, source)


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_download_extracts_members_and_caches(cache, tmp_path, monkeypatch, kind):
    """A file:// URL stands in for the network: the archive is fetched, checked, unpacked, and removed."""
    member_a, member_b = "pkg/data/a.txt", "pkg/data/b.txt"
    archive = tmp_path / f"pkg.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr(member_a, "alpha\n")
            z.writestr(member_b, "beta\n")
            z.writestr("pkg/../../evil.txt", "no")
    else:
        with tarfile.open(archive, "w:gz") as t:
            for name, text in [(member_a, "alpha\n"), (member_b, "beta\n"), ("./pkg/../../evil.txt", "no")]:
                info = tarfile.TarInfo(name)
                info.size = len(text)
                t.addfile(info, io.BytesIO(text.encode()))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    url = archive.as_uri()
    a = D.Source("test-a", ("a.txt",), url, member=member_a, md5=md5)
    b = D.Source("test-b", ("b.txt",), url, member=member_b, md5=md5)
    _serve(monkeypatch, a)
    _serve(monkeypatch, b)
    r = D.locate(a)
    assert r.origin == "download" and r.path.read_text() == "alpha\n"
    assert D.cache_path(b).read_text() == "beta\n"  # unpacked in the same pass
    assert not any(cache.rglob("evil.txt")) and not (tmp_path / "evil.txt").exists()
    assert not (cache / "eval" / "_archives" / archive.name).exists()  # every member is out: the archive is gone
    monkeypatch.setenv("GPT2_OFFLINE", "1")
    assert D.locate(b).origin == "cache"


def test_download_with_wrong_checksum_is_refused(cache, tmp_path, monkeypatch):
    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "a b"}\n')
    src = D.Source("test-x", ("x.jsonl",), f.as_uri(), sha256="0" * 64)
    _serve(monkeypatch, src)
    with pytest.raises(GPT2Error, match="sha256"):
        D.locate(src)
    assert not D.cache_path(src).exists()
    good = D.Source("test-y", ("y.jsonl",), f.as_uri(), sha256=hashlib.sha256(f.read_bytes()).hexdigest())
    _serve(monkeypatch, good)
    assert D.locate(good).path.read_text() == '{"text": "a b"}\n'


def test_every_source_is_obtainable_or_says_how():
    for s in D.SOURCES.values():
        assert s.url or s.how, s.key
        assert not (s.sha256 and s.md5)
        if s.sha256:
            assert len(s.sha256) == 64
