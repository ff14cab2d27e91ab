"""Token shards, `gpt2 prepare` and the batch loader (gpt2/data/).

References: token ids are recomputed with tiktoken's GPT-2 encoding; the shard
header is parsed with `struct` independently of the reader; the held-out draw
and the loader's windows are checked against their definitions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct

import numpy as np
import pytest
import torch

from conftest import GPT2_BPE, SHARED, read_text
from gpt2.config import PrepareConfig
from gpt2.data import prepare as prep_mod
from gpt2.data.documents import Document
from gpt2.data.loader import TrainBatches, eval_batches, eval_windows
from gpt2.data.prepare import list_inputs, prepare, split_documents
from gpt2.data.shards import HEADER_BYTES, TokenDataset, TokenStream, read_shard, shard_tokens, write_shard
from gpt2.errors import GPT2Error

SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"
EOT = 50256


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each with its own line endings (the 'paragraph' documents)."""
    out, lines = [], []
    for line in text.splitlines(keepends=True):
        if line.strip():
            lines.append(line)
        elif lines:
            out.append("".join(lines))
            lines = []
    if lines:
        out.append("".join(lines))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The first ~2,000 lines of Tiny Shakespeare as a text file, plus a JSON-lines file of WikiText lines."""
    root = tmp_path_factory.mktemp("corpus")
    text = "".join(read_text(SHAKESPEARE).splitlines(keepends=True)[:2000])
    (root / "plays").mkdir()
    (root / "plays" / "part1.txt").write_text(text, encoding="utf-8")
    wiki = [line for line in read_text(SHARED / "wikitext2_tokens" / "wiki.valid.tokens").splitlines() if len(line) > 200][:60]
    with open(root / "wiki.jsonl", "w", encoding="utf-8") as f:
        for line in wiki:
            f.write(json.dumps({"text": line, "id": hash(line)}) + "\n")
    return root, paragraphs(text), wiki


def make_cfg(inputs, out, **kw) -> PrepareConfig:
    return PrepareConfig(input=list(inputs), out=out, tokenizer=str(GPT2_BPE), text_documents="paragraph", **kw)


def stream_tokens(directory, split) -> np.ndarray:
    ds = TokenDataset(directory)
    s = ds.stream(split)
    return s.read(0, len(s))


# ----------------------------------------------------------------------------
# the shard format


def test_shard_round_trip_and_header_layout(tmp_path):
    tokens = np.array([0, 1, 50256, 65535, 7], dtype=np.uint16)
    path = tmp_path / "a.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    magic, version, width, count = struct.unpack_from("<8sIIQ", raw)
    assert (magic, version, width, count) == (b"GPT2TOKS", 1, 2, 5)
    assert len(raw) == HEADER_BYTES + 10
    assert np.frombuffer(raw[HEADER_BYTES:], dtype="<u2").tolist() == tokens.tolist()
    assert read_shard(path).tolist() == tokens.tolist()
    assert not (tmp_path / "a.bin.tmp").exists()


def test_truncated_or_foreign_shards_are_refused(tmp_path):
    path = tmp_path / "a.bin"
    write_shard(path, np.arange(100, dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-2])  # one token short
    with pytest.raises(GPT2Error, match="truncated or corrupt"):
        shard_tokens(path)
    other = tmp_path / "b.bin"
    other.write_bytes(b"\x00" * 200)
    with pytest.raises(GPT2Error, match="not a token shard"):
        read_shard(other)
    with pytest.raises(GPT2Error, match="missing"):
        read_shard(tmp_path / "none.bin")


def test_token_stream_reads_across_shard_boundaries():
    parts = [np.arange(0, 5, dtype=np.uint16), np.arange(5, 6, dtype=np.uint16), np.arange(6, 20, dtype=np.uint16)]
    s = TokenStream(parts + [np.zeros(0, dtype=np.uint16)])
    assert len(s) == 20
    for start in range(20):
        for n in range(0, 21 - start):
            assert s.read(start, n).tolist() == list(range(start, start + n))
    with pytest.raises(IndexError):
        s.read(15, 6)


# ----------------------------------------------------------------------------
# gpt2 prepare


def test_prepare_encodes_every_document_as_tiktoken_does(corpus, tmp_path, tiktoken_gpt2):
    root, docs_text, docs_json = corpus
    out = tmp_path / "ds"
    manifest = prepare(make_cfg([root], out, shard_tokens=4096))
    docs = docs_text + docs_json  # directory order: plays/part1.txt, then wiki.jsonl
    assert list_inputs([root]) == [root / "plays" / "part1.txt", root / "wiki.jsonl"]
    # the held-out draw: the round(5% of N) documents with the smallest keyed hashes
    keys = [int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8, key=(1337).to_bytes(8, "little")).digest(), "little") for d in docs]
    k = round(0.05 * len(docs))
    held = set(np.argsort(keys, kind="stable")[:k].tolist())
    assert manifest["documents"] == {"total": len(docs), "held_out": k, "threshold": str(sorted(keys)[k - 1])}
    for split, chosen in (("train", [d for i, d in enumerate(docs) if i not in held]), ("val", [d for i, d in enumerate(docs) if i in held])):
        expected = []
        for d in chosen:
            expected += [EOT] + tiktoken_gpt2.encode_ordinary(d)
        assert stream_tokens(out, split).tolist() == expected, split
        info = manifest["splits"][split]
        assert info["documents"] == len(chosen)
        assert info["bytes"] == sum(len(d.encode()) for d in chosen)
        assert info["tokens"] == len(expected) == sum(s["tokens"] for s in info["shards"])
    # shards are full except the last of each split
    train_shards = manifest["splits"]["train"]["shards"]
    assert len(train_shards) > 3 and all(s["tokens"] == 4096 for s in train_shards[:-1])
    assert (out / "tokenizer" / "bpe.json").is_file()


def test_prepare_is_idempotent_and_refuses_a_different_dataset(corpus, tmp_path, caplog):
    root, _, _ = corpus
    out = tmp_path / "ds"
    prepare(make_cfg([root], out, shard_tokens=8192))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    caplog.set_level("INFO")
    prepare(make_cfg([root], out, shard_tokens=8192))
    assert "nothing to do" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")} == stamps
    with pytest.raises(GPT2Error, match="different dataset.*val_fraction=0.05, not 0.1.*--force"):
        prepare(make_cfg([root], out, shard_tokens=8192, val_fraction=0.1))
    with pytest.raises(GPT2Error, match="input files differ"):
        prepare(make_cfg([root / "wiki.jsonl"], out, shard_tokens=8192))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")} == stamps  # nothing touched
    (out / "notes.txt").write_text("mine")
    manifest = prepare(make_cfg([root / "wiki.jsonl"], out, shard_tokens=8192, force=True))
    assert manifest["documents"]["total"] == 60
    assert (out / "notes.txt").read_text() == "mine"  # --force removes only what prepare wrote
    assert sorted(p.name for p in out.glob("*.bin")) == sorted(
        s["file"] for sp in manifest["splits"].values() for s in sp["shards"]
    )
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    with pytest.raises(GPT2Error, match="not a dataset directory"):
        prepare(make_cfg([root], foreign, force=True))


# The tokenizer fingerprint of OpenAI's GPT-2 vocabulary as manifests written by earlier releases hold it.
GPT2_FINGERPRINT = "2dab83ad0497eeacc297319fde08fd79d399688396f2991ac96ef2898d8e17b4"


def test_datasets_prepared_by_earlier_releases_are_still_recognised(corpus, tmp_path, caplog):
    """`Tokenizer.fingerprint()` is the value `gpt2 prepare` has always recorded: a finished dataset is neither
    re-encoded nor refused as another dataset after an upgrade."""
    root, _, _ = corpus
    out = tmp_path / "ds"
    manifest = prepare(make_cfg([root / "wiki.jsonl"], out, shard_tokens=8192))
    assert manifest["identity"]["tokenizer"] == GPT2_FINGERPRINT
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    caplog.set_level("INFO")
    prepare(make_cfg([root / "wiki.jsonl"], out, shard_tokens=8192))
    assert "nothing to do" in caplog.text and "damaged" not in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_interrupted_prepare_continues_where_it_stopped(corpus, tmp_path, monkeypatch):
    root, _, _ = corpus
    whole = tmp_path / "whole"
    prepare(make_cfg([root], whole, shard_tokens=2048))
    part = tmp_path / "part"
    written = []
    real_write = prep_mod.write_shard

    def failing_write(path, tokens):
        if len(written) == 5:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the sixth shard was written
        written.append(path.name)
        real_write(path, tokens)

    monkeypatch.setattr(prep_mod, "write_shard", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare(make_cfg([root], part, shard_tokens=2048))
    manifest = json.loads((part / "manifest.json").read_text())
    assert manifest["complete"] is False
    kept = {name: (part / name).stat().st_mtime_ns for name in written}
    with pytest.raises(GPT2Error, match="only partly prepared"):
        TokenDataset(part)
    monkeypatch.setattr(prep_mod, "write_shard", real_write)
    resumed = []
    monkeypatch.setattr(prep_mod, "write_shard", lambda p, t: (resumed.append(p.name), real_write(p, t)))
    prepare(make_cfg([root], part, shard_tokens=2048))
    assert not set(resumed) & set(written)  # finished shards were kept, not re-encoded
    assert {name: (part / name).stat().st_mtime_ns for name in written} == kept
    for split in ("train", "val"):
        assert stream_tokens(part, split).tolist() == stream_tokens(whole, split).tolist()
    a, b = json.loads((whole / "manifest.json").read_text()), json.loads((part / "manifest.json").read_text())
    assert a["splits"] == b["splits"] and a["fingerprint"] == b["fingerprint"]


def shard_bytes(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.bin"))}


def test_damaged_datasets_are_repaired_by_running_prepare_again(corpus, tmp_path, caplog):
    root, _, _ = corpus
    whole = tmp_path / "whole"
    prepare(make_cfg([root], whole, shard_tokens=2048))
    reference = shard_bytes(whole)
    out = tmp_path / "ds"
    prepare(make_cfg([root], out, shard_tokens=2048))
    names = sorted(reference)
    train = [n for n in names if n.startswith("train")]
    with open(out / train[2], "r+b") as f:  # truncated: the plain re-run encodes again from this shard on
        f.truncate(1000)
    (out / names[-1]).unlink()  # a held-out shard gone
    untouched = (out / train[0]).stat().st_mtime_ns
    caplog.set_level("INFO")
    prepare(make_cfg([root], out, shard_tokens=2048))
    assert "damaged or missing" in caplog.text
    assert shard_bytes(out) == reference
    assert (out / train[0]).stat().st_mtime_ns == untouched  # shards before the damage are kept
    assert json.loads((out / "manifest.json").read_text())["complete"] is True

    # damage that keeps the size: found when training reads it, mended by --force (which rebuilds everything)
    data = bytearray((out / train[1]).read_bytes())
    data[HEADER_BYTES : HEADER_BYTES + 8] = b"\xff" * 8
    (out / train[1]).write_bytes(bytes(data))
    prepare(make_cfg([root], out, shard_tokens=2048, force=True))
    assert shard_bytes(out) == reference

    # a missing tokenizer comes back; training names the fix
    shutil.rmtree(out / "tokenizer")
    with pytest.raises(GPT2Error, match="lacks its tokenizer.*gpt2 prepare"):
        TokenDataset(out).tokenizer()
    prepare(make_cfg([root], out, shard_tokens=2048))
    assert TokenDataset(out).tokenizer().n_vocab == 50257


def test_force_reads_the_new_inputs_before_deleting_anything(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "ds"
    prepare(make_cfg([root], out, shard_tokens=4096))
    before = shard_bytes(out)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe not utf-8 \x80")
    with pytest.raises(GPT2Error, match="not UTF-8"):
        prepare(make_cfg([bad], out, shard_tokens=4096, force=True))
    assert shard_bytes(out) == before
    assert TokenDataset(out).num_tokens("train") > 0  # the old dataset still loads


def test_force_deletes_only_the_shards_it_wrote(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "ds"
    prepare(make_cfg([root], out, shard_tokens=4096))
    keep = ["training_backup.bin", "valuable.bin", "train_000001.bin.bak", "train_1.bin"]
    for name in keep:
        (out / name).write_text("mine")
    prepare(make_cfg([root / "wiki.jsonl"], out, shard_tokens=4096, force=True))
    assert all((out / name).read_text() == "mine" for name in keep)

    # a manifest that names a file outside the dataset is damaged: refused, and --force does not follow it
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["file"] = "../victim/keep.txt"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GPT2Error, match="is damaged.*not a plain file name.*--force"):
        TokenDataset(out)
    with pytest.raises(GPT2Error, match="is damaged"):
        prepare(make_cfg([root], out, shard_tokens=4096))
    prepare(make_cfg([root], out, shard_tokens=4096, force=True))
    assert (victim / "keep.txt").read_text() == "mine"
    assert all((out / name).read_text() == "mine" for name in keep)
    assert TokenDataset(out).manifest["documents"]["total"] > 60


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["splits"].pop("val"), "no 'val' split"),
        (lambda m: m["tokenizer"].update(n_vocab="lots"), "n_vocab is not a positive integer"),
        (lambda m: m["splits"]["train"]["shards"][0].pop("tokens"), "without its file name and token count"),
    ],
)
def test_hand_edited_manifests_are_one_line_errors(corpus, tmp_path, edit, message):
    root, _, _ = corpus
    out = tmp_path / "ds"
    prepare(make_cfg([root / "wiki.jsonl"], out, shard_tokens=4096))
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GPT2Error, match=message):
        TokenDataset(out)


def test_duplicate_documents_land_in_the_same_split(tmp_path):
    docs = [f"document number {i}\n" for i in range(200)]
    docs += docs[:100]  # each of the first 100 appears twice
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    cfg = PrepareConfig(input=[tmp_path / "d.jsonl"], out=tmp_path / "ds", tokenizer=str(GPT2_BPE), jsonl_field="body", val_fraction=0.1)
    val = list(split_documents(cfg, "val"))
    train = list(split_documents(cfg, "train"))
    assert len(val) + len(train) == 300
    assert not set(val) & set(train)
    assert 30 <= len(val) <= 31  # 30, or 31 if the two copies of one document straddle the threshold


def key_of(text: str, seed: int = 1337) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, key=seed.to_bytes(8, "little")).digest(), "little")


def test_documents_with_ids_are_held_out_by_the_hash_of_their_id(tmp_path, tiktoken_gpt2):
    """A document source with ids (WebText: URLs) is split by the keyed hash of the id, not of the text."""
    rows = [{"url": f"https://example.org/{i}", "text": f"page {i % 50} says hello\n"} for i in range(200)]  # texts repeat
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PrepareConfig(input=[tmp_path / "d.jsonl"], out=tmp_path / "ds", tokenizer=str(GPT2_BPE), id_field="url", shard_tokens=1024)
    manifest = prepare(cfg)
    held = sorted(range(200), key=lambda i: key_of(rows[i]["url"]))[:10]
    assert manifest["documents"]["held_out"] == 10
    expected = []
    for i in sorted(held):
        expected += [EOT] + tiktoken_gpt2.encode_ordinary(rows[i]["text"])
    assert stream_tokens(tmp_path / "ds", "val").tolist() == expected
    assert manifest["settings"]["id_field"] == "url"

    # an in-memory source gives the same dataset as the file it was read from
    class InMemory:
        def __init__(self, docs):
            self.docs = docs

        def __iter__(self):
            return (Document(r["text"], r["url"]) for r in self.docs)

        def inputs(self):
            return [{"path": "memory", "bytes": 0, "sha256": hashlib.sha256(json.dumps(self.docs).encode()).hexdigest()}]

        def settings(self):
            return {"text_documents": "file", "jsonl_field": "text", "id_field": "url"}

    again = prepare(PrepareConfig(input=[tmp_path / "d.jsonl"], out=tmp_path / "ds2", tokenizer=str(GPT2_BPE), shard_tokens=1024), InMemory(rows))
    assert again["splits"] == manifest["splits"]
    with pytest.raises(GPT2Error, match=r"line 1: no 'id' string"):
        prepare(PrepareConfig(input=[tmp_path / "d.jsonl"], out=tmp_path / "ds3", tokenizer=str(GPT2_BPE), id_field="id"))


def test_datasets_without_ids_keep_their_settings_and_fingerprint(corpus, tmp_path):
    root, _, _ = corpus
    manifest = prepare(make_cfg([root / "wiki.jsonl"], tmp_path / "ds", shard_tokens=4096))
    assert set(manifest["settings"]) == {"val_fraction", "seed", "text_documents", "jsonl_field", "shard_tokens"}


@pytest.mark.parametrize(
    "files, kwargs, message",
    [
        ({"a.txt": "only one document\n"}, {}, "single document, so none can be held out.*paragraph"),
        ({"a.jsonl": '{"text": "x"}\n{"txt": "y"}\n'}, {}, r"a.jsonl, line 2: no 'text' field"),
        ({"a.jsonl": '{"text": "x"}\n{oops\n'}, {}, "line 2: not valid JSON"),
        ({"a.jsonl": '{"text": 5}\n'}, {}, "'text' is int, not a string"),
        ({"a.txt": "\n \n"}, {}, "hold no text"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, files, kwargs, message):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    with pytest.raises(GPT2Error, match=message):
        prepare(PrepareConfig(input=[tmp_path / n for n in files], out=tmp_path / "ds", tokenizer=str(GPT2_BPE), **kwargs))
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_not_utf8_and_missing_inputs(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n\nna\xefve\n".encode("latin-1"))
    with pytest.raises(GPT2Error, match="not UTF-8"):
        prepare(make_cfg([tmp_path / "latin1.txt"], tmp_path / "ds"))
    with pytest.raises(GPT2Error, match="does not exist"):
        prepare(make_cfg([tmp_path / "nope.txt"], tmp_path / "ds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GPT2Error, match="holds no .txt"):
        prepare(make_cfg([tmp_path / "empty"], tmp_path / "ds"))


def test_prepare_command_line(cli, tmp_path):
    text = "".join(read_text(SHAKESPEARE).splitlines(keepends=True)[:400])
    (tmp_path / "in.txt").write_text(text)
    args = ["prepare", "--input", str(tmp_path / "in.txt"), "--tokenizer", str(GPT2_BPE), "--out", str(tmp_path / "ds"), "--text-documents", "paragraph"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "prepared" in r.stderr and "held out" in r.stderr
    r = cli(*args[:-2], "--text-documents", "line")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "different dataset" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------
# the loader


def toy_stream(n: int = 10_000) -> TokenStream:
    tokens = np.arange(n, dtype=np.uint16)
    return TokenStream([tokens[:3000], tokens[3000:3001], tokens[3001:]])


def test_windows_are_contiguous_and_each_epoch_visits_every_window_once():
    s = toy_stream()
    T = 64
    loader = TrainBatches(s, T, micro_batch=4, global_batch=8, seed=3)
    n = loader.n_windows
    assert n == (10_000 - T) // T
    starts_by_epoch: dict[int, list[int]] = {}
    steps = 3 * n // 8 + 1
    for _ in range(steps):
        cursor = loader.cursor
        batches = loader.next()
        assert len(batches) == 2 and all(x.shape == (4, T) and x.dtype == torch.int64 for x, _ in batches)
        for k, (x, y) in zip(range(cursor, cursor + 8), [row for x, y in batches for row in zip(x, y)]):
            assert torch.equal(y[:-1], x[1:])  # targets are the inputs shifted by one
            assert x.tolist() == list(range(int(x[0]), int(x[0]) + T))  # contiguous
            starts_by_epoch.setdefault(k // n, []).append(int(x[0]))
    for epoch in (0, 1, 2):
        starts = starts_by_epoch[epoch]
        shift = min(starts) % T
        assert sorted(starts) == [shift + j * T for j in range(n)]  # every window exactly once
    assert starts_by_epoch[0][:20] != starts_by_epoch[1][:20]  # a fresh order each epoch
    again = TrainBatches(s, T, micro_batch=4, global_batch=8, seed=3)
    assert [int(x[0, 0]) for x, _ in again.next()] == [starts_by_epoch[0][0], starts_by_epoch[0][4]]
    other = TrainBatches(s, T, micro_batch=4, global_batch=8, seed=4)
    assert [int(x[0, 0]) for x, _ in other.next()] != [starts_by_epoch[0][0], starts_by_epoch[0][4]]


def test_ranks_share_a_step_disjointly_and_equal_one_process():
    s = toy_stream()
    single = TrainBatches(s, 32, micro_batch=2, global_batch=12, seed=1)
    ranks = [TrainBatches(s, 32, micro_batch=2, global_batch=12, rank=r, world=3, seed=1) for r in range(3)]
    assert single.accum == 6 and all(r.accum == 2 for r in ranks)
    for _ in range(40):
        whole = torch.cat([x for x, _ in single.next()])
        parts = [torch.cat([x for x, _ in r.next()]) for r in ranks]
        assert torch.equal(torch.cat(parts), whole)
        firsts = [set(p[:, 0].tolist()) for p in parts]
        assert not (firsts[0] & firsts[1] or firsts[1] & firsts[2] or firsts[0] & firsts[2])


def test_cursor_resumes_with_the_very_next_batch():
    s = toy_stream()
    a = TrainBatches(s, 50, micro_batch=3, global_batch=6, seed=9)
    for _ in range(100):  # past the end of the first epoch (197 windows)
        a.next()
    state = a.state_dict()
    b = TrainBatches(s, 50, micro_batch=3, global_batch=6, seed=9)
    b.load_state_dict(json.loads(json.dumps(state)))
    for _ in range(5):
        assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a.next(), b.next()))
    with pytest.raises(GPT2Error, match="block_size was 50, now 40"):
        TrainBatches(s, 40, micro_batch=3, global_batch=6, seed=9).load_state_dict(state)


def test_loader_errors():
    with pytest.raises(GPT2Error, match="too few for windows of 64"):
        TrainBatches(TokenStream([np.zeros(100, dtype=np.uint16)]), 64, 1, 1)
    with pytest.raises(GPT2Error, match="multiple of 8"):
        TrainBatches(toy_stream(), 16, micro_batch=4, global_batch=12, world=2)


def test_eval_batches_cover_the_held_out_windows_once():
    s = toy_stream(1000)
    n, T = eval_windows(s, 64)
    assert (n, T) == (999 // 64, 64)
    seen = []
    for rank in range(3):
        for x, y in eval_batches(s, 64, 4, rank=rank, world=3):
            assert torch.equal(x[:, 1:], y[:, :-1])
            seen += x[:, 0].tolist()
    assert sorted(seen) == [j * 64 for j in range(n)]
    assert sum(len(x) for x, _ in eval_batches(s, 64, 4, max_tokens=256)) == 4
    assert eval_windows(toy_stream(30), 64) == (1, 29)  # a held-out split shorter than the context


def test_compressed_inputs_give_the_tokens_of_the_plain_ones(corpus, tmp_path):
    """.jsonl.zst (what `gpt2 webtext` writes) and .gz read as the same documents; a cut-off file is one line."""
    import gzip

    import zstandard

    root, _, _ = corpus
    plain = (root / "wiki.jsonl").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "wiki.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(plain))
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "wiki.jsonl.gz").write_bytes(gzip.compress(plain))
    reference = prepare(make_cfg([root / "wiki.jsonl"], tmp_path / "plain", shard_tokens=4096))
    for folder in ("in", "gz"):
        manifest = prepare(make_cfg([tmp_path / folder], tmp_path / f"ds-{folder}", shard_tokens=4096))
        assert manifest["documents"] == reference["documents"]
        for split in ("train", "val"):
            assert np.array_equal(stream_tokens(tmp_path / f"ds-{folder}", split), stream_tokens(tmp_path / "plain", split))
    cut = zstandard.ZstdCompressor().compress(plain)[: len(plain) // 4]
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "wiki.jsonl.zst").write_bytes(cut)
    with pytest.raises(GPT2Error, match=r"wiki.jsonl.zst is truncated or corrupt"):
        prepare(make_cfg([tmp_path / "cut"], tmp_path / "ds-cut", shard_tokens=4096))
    from gpt2.tokenizer import iter_file_text  # `gpt2 tokenizer train` reads the same way

    assert "".join(iter_file_text([tmp_path / "in" / "wiki.jsonl.zst"], chunk_chars=1000)) == plain.decode()
    with pytest.raises(GPT2Error, match=r"wiki.jsonl.zst is truncated or corrupt"):
        list(iter_file_text([tmp_path / "cut" / "wiki.jsonl.zst"]))
