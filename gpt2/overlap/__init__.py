"""The overlap study of the GPT-2 paper (section 4): how much of each test set was already in the training data.

    ngrams.py         normalisation (lower-cased alphanumeric words) and the n-gram keys
    documents.py      the documents of text files, JSON lines and token shards
    bloom.py          the Bloom filter and its memory-mapped file format
    build.py          `gpt2 overlap build`: the filter of a training set's n-grams, on every core
    testsets.py       the evaluation tasks' text, read as `gpt2 eval` reads it
    report.py         `gpt2 overlap report`: Table 6, overlap per example, metrics on clean / dirty examples
    subsets.py        `gpt2 eval`'s metrics recomputed on a subset of examples
    decontaminate.py  GPT-3's 13-gram rule: remove test-set text from training documents
"""
