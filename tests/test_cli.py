"""The `gpt2` command: the tokenizer subcommands end to end, and one-line errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gpt2.cli import COMMANDS, GROUPS
from gpt2.config import SampleConfig
from gpt2.errors import GPT2Error
from gpt2.tokenizer import Tokenizer

from conftest import GPT2_BPE, SHARED, read_text


def assert_user_error(result, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_command(cli):
    out = cli("--help").stdout + "".join(cli(group, "--help").stdout for group in GROUPS)
    for name in COMMANDS:
        assert name.split()[-1] in out


def test_train_encode_decode(cli, tmp_path):
    corpus = SHARED / "botchan" / "botchan.txt"
    r = cli("tokenizer", "train", "--input", str(corpus), "--vocab-size", "1000", "--out", str(tmp_path / "tok"))
    assert r.returncode == 0, r.stderr
    assert "bytes/token" in r.stderr
    tok = Tokenizer.load(tmp_path / "tok")
    assert tok.n_vocab == 1000 and tok.eot_token == 999

    text = "I was a mischievous boy.\nBotchan ☺"
    r = cli("tokenizer", "encode", "--tokenizer", str(tmp_path / "tok"), "--text", text)
    ids = [int(x) for x in r.stdout.split()]
    assert ids == tok.encode(text)
    assert f"{len(text.encode())} bytes -> {len(ids)} tokens" in r.stderr
    r = cli("tokenizer", "decode", "--tokenizer", str(tmp_path / "tok"), "--ids", *map(str, ids))
    assert r.stdout == text


def test_encode_file_to_npy_and_back(cli, tmp_path):
    src = SHARED / "ptb" / "ptb.valid.txt"
    r = cli("tokenizer", "encode", "--tokenizer", str(GPT2_BPE), "--input", str(src), "--output", str(tmp_path / "ids.npy"))
    assert r.returncode == 0, r.stderr
    ids = np.load(tmp_path / "ids.npy")
    assert ids.dtype == np.uint16 and ids.tolist() == Tokenizer.load(GPT2_BPE).encode(read_text(src))
    r = cli("tokenizer", "decode", "--tokenizer", str(GPT2_BPE), "--input", str(tmp_path / "ids.npy"), "--output", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == read_text(src)
    # an existing output is replaced only with --force
    (tmp_path / "keep.txt").write_text("precious")
    for cmd, inp in (("encode", str(src)), ("decode", str(tmp_path / "ids.npy"))):
        r = cli("tokenizer", cmd, "--tokenizer", str(GPT2_BPE), "--input", inp, "--output", str(tmp_path / "keep.txt"))
        assert r.returncode == 2 and "exists; pass --force to replace it" in r.stderr and (tmp_path / "keep.txt").read_text() == "precious"
    r = cli("tokenizer", "decode", "--tokenizer", str(GPT2_BPE), "--input", str(tmp_path / "ids.npy"), "--output", str(tmp_path / "keep.txt"), "--force")
    assert r.returncode == 0 and (tmp_path / "keep.txt").read_text() == read_text(src)


def test_every_command_reads_a_file_byte_for_byte(cli, tmp_path):
    """botchan.txt has a UTF-8 byte-order mark and CRLF line ends: encode -> decode gives the file back exactly,
    and `tokenizer train`, `tokenizer encode` and `sample --prompt-file` all read the same text (the same byte count)."""
    src = SHARED / "botchan" / "botchan.txt"
    data = src.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data  # what makes the file a test
    r = cli("tokenizer", "encode", "--tokenizer", str(GPT2_BPE), "--input", str(src), "--output", str(tmp_path / "b.npy"))
    assert r.returncode == 0, r.stderr
    assert f"{len(data):,} bytes ->" in r.stderr
    ids = np.load(tmp_path / "b.npy").tolist()
    assert ids == Tokenizer.load(GPT2_BPE).encode_ordinary(data.decode("utf-8"))
    r = cli("tokenizer", "decode", "--tokenizer", str(GPT2_BPE), "--input", str(tmp_path / "b.npy"), "--output", str(tmp_path / "back.txt"))
    assert r.returncode == 0 and (tmp_path / "back.txt").read_bytes() == data
    # decoding to standard output writes the same bytes
    r = subprocess.run(
        [sys.executable, "-m", "gpt2", "tokenizer", "decode", "--tokenizer", str(GPT2_BPE), "--input", str(tmp_path / "b.npy")],
        capture_output=True, env={**os.environ, "GPT2_OFFLINE": "1"},
    )
    assert r.stdout == data
    # standard input is read by the same rule
    r = subprocess.run(
        [sys.executable, "-m", "gpt2", "tokenizer", "encode", "--tokenizer", str(GPT2_BPE)],
        input=data, capture_output=True, env={**os.environ, "GPT2_OFFLINE": "1"},
    )
    assert [int(x) for x in r.stdout.split()] == ids
    # the trainer counts the same bytes: the BOM and the CRs are part of the text it learns from
    r = cli("tokenizer", "train", "--input", str(src), "--vocab-size", "300", "--out", str(tmp_path / "tok"))
    assert r.returncode == 0 and f"on the training text: {len(data):,} bytes ->" in r.stderr, r.stderr


def test_prompt_file_is_read_like_encode(tmp_path):
    from gpt2.sample_cli import read_prompts

    src = SHARED / "botchan" / "botchan.txt"
    cfg = SampleConfig(model=tmp_path, prompt_file=src)
    assert read_prompts(cfg) == [src.read_bytes().decode("utf-8")]
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(GPT2Error, match="latin1.txt is not UTF-8 text .* at byte 3"):
        read_prompts(SampleConfig(model=tmp_path, prompt_file=tmp_path / "latin1.txt"))


def test_stdin_and_special_token_choices(cli):
    text = "one<|endoftext|>two"
    assert_user_error(cli("tokenizer", "encode", "--tokenizer", str(GPT2_BPE), input=text), "--special allow")
    allowed = cli("tokenizer", "encode", "--tokenizer", str(GPT2_BPE), "--special", "allow", input=text).stdout.split()
    ordinary = cli("tokenizer", "encode", "--tokenizer", str(GPT2_BPE), "--special", "ordinary", input=text).stdout.split()
    assert "50256" in allowed and "50256" not in ordinary


def test_train_refuses_to_overwrite(cli, tmp_path):
    corpus = SHARED / "botchan" / "botchan.txt"
    args = ["tokenizer", "train", "--input", str(corpus), "--vocab-size", "300", "--out", str(tmp_path)]
    assert cli(*args).returncode == 0
    before = (tmp_path / "bpe.json").read_bytes()
    assert_user_error(cli(*[*args[:-3], "400", "--out", str(tmp_path)]), "--force")
    assert (tmp_path / "bpe.json").read_bytes() == before
    assert cli(*args[:-3], "400", "--out", str(tmp_path), "--force").returncode == 0
    assert Tokenizer.load(tmp_path).n_vocab == 400


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["tokenizer", "train", "--input", "/no/such/file", "--out", "{tmp}/t"], "does not exist"),
        (["tokenizer", "train", "--input", "{empty}", "--out", "{tmp}/t"], "is empty"),
        (["tokenizer", "train", "--input", "{binary}", "--out", "{tmp}/t"], "not UTF-8"),
        (["tokenizer", "train", "--input", "{empty}", "--out", "{tmp}/t", "--vocab-size", "100"], "too small"),
        (["tokenizer", "train", "--input", "{empty}", "--out", "{tmp}/t", "--vocab-size", "lots"], "expected an integer"),
        (["tokenizer", "train", "--out", "{tmp}/t"], "missing required setting --input"),
        (["tokenizer", "encode", "--tokenizer", "{tmp}/none", "--text", "x"], "does not exist"),
        (["tokenizer", "encode", "--tokenizer", "{tmp}", "--text", "x"], "holds no tokenizer"),
        (["tokenizer", "decode", "--tokenizer", str(GPT2_BPE), "--ids", "1", "99999"], "outside this tokenizer's vocabulary"),
        (["tokenizer", "decode", "--tokenizer", str(GPT2_BPE), "--input", "{binary}"], "integer ids"),
        (["tokenizer", "encode", "--tokenizer", "gpt2", "--text", "x"], "GPT2_OFFLINE"),
        (["tokenizer", "train", "--input", "{binary}", "--out", "{tmp}/t", "--special-tokens", ""], "has an empty one"),
        (["tokenizer", "train", "--input", "{binary}", "--out", "{model}"], "holds a model (config.json)"),
        (["tokenizer", "decode", "--tokenizer", str(GPT2_BPE), "--input", "{floats}"], "integer ids"),
        (["demo", "--corpus", "{tmp}", "--out", "{tmp}/d"], "is a directory"),
        (["tokenizer", "train", "--input", str(SHARED / "botchan" / "botchan.txt"), "--vocab-size", "260", "--out", "{empty}"],
         "File exists; choose another path"),
        (["train", "--config", "{tmp}"], "Is a directory; give a file, not a directory"),
    ],
)
def test_bad_input_is_one_line(cli, tmp_path, args, fragment):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    np.save(tmp_path / "floats.npy", np.array([1.5, 2.0]))
    subs = {"{tmp}": str(tmp_path), "{empty}": str(tmp_path / "empty.txt"), "{binary}": str(tmp_path / "binary.bin"),
            "{model}": str(tmp_path / "model"), "{floats}": str(tmp_path / "floats.npy")}
    for key, value in subs.items():
        args = [a.replace(key, value) for a in args]
    assert_user_error(cli(*args, env={"GPT2_CACHE": str(tmp_path / "cache")}), fragment)
