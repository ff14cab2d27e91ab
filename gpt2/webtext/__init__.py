"""WebText (GPT-2 paper section 2.1): Reddit links -> pages -> clean, de-duplicated documents -> token shards.

One module per stage, each a plain function over shards and a `gpt2 webtext` subcommand:

    links.py     Pushshift submission dumps -> outbound links with at least 3 karma
    fetch.py     links -> raw responses in WARC files (asyncio HTTP, polite, resumable)
    extract.py   WARC -> documents: the main text of each HTML page (trafilatura by default)
    clean.py     language identification, length bounds, heuristic quality rules
    dedup.py     exact and near-duplicate removal (MinHash LSH), the copy with the most karma kept
    build.py     every stage in order, the held-out split by URL, token shards (gpt2 prepare), a report

    shards.py    the JSON-lines shards and stage folders they share
    engine.py    where the stages run: a local process pool, or a Dask cluster

docs/webtext.md compares the paper's recipe with this one.
"""
