"""The whole WebText pipeline on real data: Reddit dumps -> links -> fetch (every link answered by the loopback
server, acting as the proxy, with a real page) -> extract -> clean -> dedup -> token shards, checked against
tiktoken; the Dask engine against the local one; kill -9 during a build, then a re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import GPT2_BPE, REPO, SHARED
from gpt2.config import WebTextBuildConfig, from_dict
from gpt2.data.shards import TokenDataset
from gpt2.webtext.build import STAGES, build
from gpt2.webtext.links import links
from gpt2.webtext.shards import read_jsonl
from webtext_server import Server, load_pages

PAGES = load_pages(SHARED / "web_pages")
DUMPS = SHARED / "pushshift"
MIN_KARMA = 15  # 31 links of the two dumps: small enough for the default suite


def link_urls(tmp_path, min_karma: int) -> list[str]:
    from gpt2.config import WebTextLinksConfig

    links(WebTextLinksConfig(input=[DUMPS], out=tmp_path / "probe", min_karma=min_karma, shards=1, workers=1))
    return sorted(r["url"] for r in read_jsonl(tmp_path / "probe" / "links-00000.jsonl"))


META = json.loads((SHARED / "web_pages" / "evaldata.json").read_text(encoding="utf-8"))
# pages whose expected strings read as English, and the others (mostly German)
ENGLISH = [i for i, e in enumerate(META.values()) if any(f" {w} " in f" {s} " for s in e["with"] for w in ("the", "and", "of"))]
OTHER = [i for i in range(len(META)) if i not in ENGLISH]


def page_map(urls: list[str]) -> dict[str, int]:
    """Each link gets a real page, English for three links in four; the last two get the pages of the first two
    (planted exact duplicates)."""
    mapping = {url: ENGLISH[i % len(ENGLISH)] if i % 4 else OTHER[i % len(OTHER)] for i, url in enumerate(urls)}
    mapping[urls[-1]] = mapping[urls[0]]
    mapping[urls[-2]] = mapping[urls[1]]
    return mapping


def settings(out, proxy: str, **kw) -> WebTextBuildConfig:
    data = {
        "input": [str(DUMPS)], "out": str(out), "workers": 2,
        "links": {"min_karma": MIN_KARMA, "shards": 3, "compress": True},
        "fetch": {"proxy": proxy, "per_host_delay": 0.0, "robots": True, "retries": 0, "concurrency": 8},
        "clean": {"min_words": 50},
        "dedup": {"compress": True},
        "prepare": {"tokenizer": str(GPT2_BPE), "val_fraction": 0.1, "shard_tokens": 4096},
        **kw,
    }
    return from_dict(WebTextBuildConfig, data)


def without_fetch_time(rows: list[dict]) -> list[dict]:
    return [{**d, "fetched": None} for d in rows]


def documents(folder) -> dict[str, dict]:
    return {d["url"]: d for p in sorted(folder.glob("docs-*.jsonl*")) for d in read_jsonl(p)}


def test_reddit_dump_to_token_shards(tmp_path, tiktoken_gpt2, monkeypatch):
    urls = link_urls(tmp_path, MIN_KARMA)
    with Server([b for _, b in PAGES], proxy_pages=page_map(urls)) as server:
        report = build(settings(tmp_path / "wt", server.base))
    out = tmp_path / "wt"
    stats = report["stages"]
    assert stats["links"]["links"] == len(urls) == 31
    assert stats["fetch"]["pages"] == len(urls)  # robots.txt 404 on every host: all allowed
    extracted = documents(out / "extract")
    cleaned = documents(out / "clean")
    unique = documents(out / "dedup")
    assert set(extracted) <= set(urls) and len(extracted) >= 28
    assert all(d["language"] == "en" for d in cleaned.values())
    assert stats["clean"]["dropped"].get("language", 0) >= 5  # a page in four is not English
    # links served the same page: of those, the one with the most karma (then the smallest URL) is kept
    by_page: dict[int, list[str]] = {}
    for url, page in page_map(urls).items():
        if url in cleaned:
            by_page.setdefault(page, []).append(url)
    assert any(len(group) > 1 for group in by_page.values())
    for group in by_page.values():
        keep = max(group, key=lambda u: (cleaned[u]["karma"], [-ord(c) for c in u]))
        assert keep in unique and not (set(group) - {keep}) & set(unique)
    assert stats["dedup"]["dropped"]["exact duplicate"] == sum(len(g) - 1 for g in by_page.values())
    assert set(unique) == {max(g, key=lambda u: (cleaned[u]["karma"], [-ord(c) for c in u])) for g in by_page.values()}
    # the token shards hold exactly the unique documents, each after <|endoftext|>, 10% held out by URL
    ds = TokenDataset(out / "tokens")
    manifest = ds.manifest
    assert manifest["documents"]["total"] == len(unique) and manifest["settings"]["id_field"] == "url"
    tokens = {s: ds.stream(s).read(0, len(ds.stream(s))).tolist() for s in ("train", "val")}
    all_tokens = tokens["train"] + tokens["val"]
    expected = sum(len(tiktoken_gpt2.encode_ordinary(d["text"])) + 1 for d in unique.values())
    assert len(all_tokens) == expected
    texts = tiktoken_gpt2.decode(tokens["val"]).split("<|endoftext|>")[1:]
    assert len(texts) == manifest["documents"]["held_out"] == round(0.1 * len(unique))
    assert set(texts) <= {d["text"] for d in unique.values()}
    assert (out / "report.md").read_text().count("|") > 20 and (out / "languages.png").stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["top_domains"]
    # a second run finds every stage finished and changes nothing
    before = {p: p.stat().st_mtime_ns for p in (out / "tokens").glob("*.bin")}
    with Server([b for _, b in PAGES], proxy_pages=page_map(urls)) as server:
        build(settings(tmp_path / "wt", server.base))
    assert {p: p.stat().st_mtime_ns for p in (out / "tokens").glob("*.bin")} == before
    # other settings for a finished stage, or a stage made again under a finished one: refused before any work
    from gpt2.errors import GPT2Error

    recorded = (out / "config.toml").read_text()
    with pytest.raises(GPT2Error, match=r"wt/clean was made with clean.min_words=50, not 80: delete .*wt/clean and the stages after it \(dedup\)"):
        build(settings(tmp_path / "wt", "http://127.0.0.1:9", clean={"min_words": 80}))
    with pytest.raises(GPT2Error, match=r"wt/links was made with links.min_karma=15, not 3"):
        build(settings(tmp_path / "wt", "http://127.0.0.1:9", links={"min_karma": 3, "shards": 3, "compress": True}))
    assert (out / "config.toml").read_text() == recorded
    build(settings(tmp_path / "wt", "http://127.0.0.1:9", fetch={"proxy": "http://127.0.0.1:9", "concurrency": 2}))  # how, not what
    monkeypatch.chdir(DUMPS.parent)  # the same dumps named by a relative path
    build(settings(tmp_path / "wt", "http://127.0.0.1:9", input=[DUMPS.name]))
    with pytest.raises(GPT2Error, match=r"wt/fetch was made with fetch.limit=None, not 2"):
        build(settings(tmp_path / "wt", "http://127.0.0.1:9", fetch={"proxy": "http://127.0.0.1:9", "limit": 2}))
    (out / "clean" / "stats.json").unlink()
    with pytest.raises(GPT2Error, match=r"wt/dedup is finished but .*wt/clean, before it, is not"):
        build(settings(tmp_path / "wt", "http://127.0.0.1:9"))


def test_the_recipe_config_is_valid():
    from gpt2.config import resolve

    cfg = resolve(WebTextBuildConfig, {}, REPO / "configs" / "webtext.toml")
    assert (cfg.links.min_karma, cfg.prepare.val_fraction, cfg.dedup.bands, cfg.dedup.rows, cfg.clean.languages) == (3, 0.05, 14, 8, ["en"])


def test_build_refuses_a_folder_it_did_not_write(tmp_path):
    from gpt2.errors import GPT2Error

    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / "thesis.tex").write_text("mine")
    with pytest.raises(GPT2Error, match="holds thesis.tex, which `gpt2 webtext build` did not write"):
        build(settings(tmp_path / "wt", "http://127.0.0.1:9"))
    assert [s.name for s in STAGES] == ["links", "fetch", "extract", "clean", "dedup"]


@pytest.mark.slow
def test_dask_engine_gives_the_same_documents_as_the_local_one(tmp_path):
    urls = link_urls(tmp_path, 10)
    with Server([b for _, b in PAGES], proxy_pages=page_map(urls)) as server:
        local = build(settings(tmp_path / "local", server.base, links={"min_karma": 10, "shards": 4}))
        dask = build(settings(tmp_path / "dask", server.base, engine="dask", links={"min_karma": 10, "shards": 4}))
    for stage in ("links", "extract", "clean", "dedup"):
        # the same documents, fetched at other times
        a = {p.name: without_fetch_time(read_jsonl(p)) for p in sorted((tmp_path / "local" / stage).glob("*-*.jsonl*"))}
        b = {p.name: without_fetch_time(read_jsonl(p)) for p in sorted((tmp_path / "dask" / stage).glob("*-*.jsonl*"))}
        assert a and a == b, stage
    assert local["tokens"] == dask["tokens"]
    assert local["stages"]["dedup"]["dropped"] == dask["stages"]["dedup"]["dropped"]


@pytest.mark.slow
def test_an_existing_dask_cluster_is_used_through_its_scheduler_address(tmp_path):
    from distributed import LocalCluster

    from gpt2.config import WebTextLinksConfig

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        stats = links(WebTextLinksConfig(input=[DUMPS], out=tmp_path / "dask", scheduler=cluster.scheduler_address, shards=4))
        with cluster.get_client() as client:
            assert client.run(lambda: 1)  # the cluster's two workers ran the stage, and stay up after it
    local = links(WebTextLinksConfig(input=[DUMPS], out=tmp_path / "local", workers=1, shards=4))
    assert stats["links"] == local["links"]
    for p in sorted((tmp_path / "local").glob("links-*.jsonl")):
        assert list(read_jsonl(p)) == list(read_jsonl(tmp_path / "dask" / p.name))
    from gpt2.errors import GPT2Error

    with pytest.raises(GPT2Error, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        links(WebTextLinksConfig(input=[DUMPS], out=tmp_path / "none", scheduler="tcp://127.0.0.1:9", shards=4))


@pytest.mark.slow
def test_kill_9_during_a_build_then_rerun_gives_the_same_corpus(tmp_path):
    urls = link_urls(tmp_path, 10)
    with Server([b for _, b in PAGES], proxy_pages=page_map(urls)) as server:
        whole = tmp_path / "whole"
        build(settings(whole, server.base, links={"min_karma": 10, "shards": 4}))
        out = tmp_path / "killed"
        config = tmp_path / "build.toml"
        from gpt2.config import to_toml

        config.write_text(to_toml(settings(out, server.base, links={"min_karma": 10, "shards": 4})))
        args = [sys.executable, "-m", "gpt2", "webtext", "build", "--config", str(config)]
        env = {**os.environ, "GPT2_OFFLINE": "1"}
        # kill at three moments: while fetching, while extracting, while cleaning or after
        for marker in ("fetch/fetch-00000.log.jsonl", "extract/webtext-stage.json", "clean/webtext-stage.json"):
            proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 120
            while time.time() < deadline and not (out / marker).exists() and proc.poll() is None:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    for stage in ("links", "extract", "clean", "dedup"):
        a = {p.name: without_fetch_time(read_jsonl(p)) for p in sorted((whole / stage).glob("*-*.jsonl*"))}
        b = {p.name: without_fetch_time(read_jsonl(p)) for p in sorted((out / stage).glob("*-*.jsonl*"))}
        assert a == b, stage  # the same documents (fetched at other times)
    a = {p.name: p.read_bytes() for p in sorted((whole / "tokens").glob("*.bin"))}
    b = {p.name: p.read_bytes() for p in sorted((out / "tokens").glob("*.bin"))}
    assert a == b


def test_the_decontamination_stage_cuts_evaluation_text_out(tmp_path):
    """With decontaminate.tasks, a stage after dedup applies GPT-3's 13-gram rule: a page that quotes a LAMBADA
    passage loses it (and 200 characters either side), keeps its URL and other fields; a clean page is untouched."""
    from gpt2.webtext.build import DECONTAMINATE, _decontaminate, stages
    from gpt2.webtext.engine import make_engine
    from gpt2.webtext.shards import write_jsonl

    passage = json.loads((SHARED / "lambada" / "lambada_test.jsonl").read_text(encoding="utf-8").splitlines()[7])["text"]
    filler = " ".join(f"Sentence number {i} of an unrelated essay about gardening and rain." for i in range(40))
    clean_doc = {"url": "http://a.example/1", "karma": 5, "title": "A", "text": filler}
    quoting = {"url": "http://b.example/2", "karma": 9, "title": "B", "text": filler + " " + passage + " " + filler}
    (tmp_path / "dedup").mkdir()
    write_jsonl(tmp_path / "dedup" / "docs-00000.jsonl", [clean_doc, quoting])
    cfg = settings(tmp_path / "wt", "http://127.0.0.1:9", workers=1,
                   decontaminate={"tasks": ["lambada"], "data_dir": str(SHARED)})
    assert [s.name for s in stages(cfg)] == ["links", "fetch", "extract", "clean", "dedup", "decontaminate"] and stages(cfg)[-1] is DECONTAMINATE
    with make_engine(cfg) as engine:
        stats = _decontaminate(cfg, tmp_path / "dedup", tmp_path / "wt" / "decontaminate", engine)
    rows = list(read_jsonl(tmp_path / "wt" / "decontaminate" / "docs-00000.jsonl"))
    assert rows[0] == clean_doc
    pieces = [r for r in rows if r["url"] == quoting["url"]]
    assert len(pieces) == 2 and all(r["karma"] == 9 and r["title"] == "B" for r in pieces)
    assert all(passage[:200] not in r["text"] and passage[-200:] not in r["text"] for r in pieces)
    assert stats["contaminated"] == 1 and stats["kept"] == 3 and stats["hits"] > 0
    assert json.loads((tmp_path / "wt" / "decontaminate" / "stats.json").read_text())["kept"] == 3
